// A server that listens on $PORT (a port corral binds at its request) and starts a
// helper that leaves its process group (setsid) holding the listening socket, as a
// daemonizing helper or a leaked background job would.
const http = require('http');
const { spawn } = require('child_process');

const server = http.createServer((req, res) => res.end('ok\n'));
server.listen(Number(process.env.PORT), () => {
  spawn('setsid', ['sleep', '313'], {
    stdio: ['ignore', 'ignore', 'ignore', server._handle.fd],
    detached: true,
  }).unref();
});
