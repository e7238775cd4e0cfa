// A plain Node HTTP server that serves on the socket corral hands over (fd 3), or on
// PORT when run on its own. Run it clustered with:
//   corral run --listen 3000 -i max -- node examples/node/server.js
'use strict';
const http = require('http');

const server = http.createServer((req, res) => {
  res.setHeader('Content-Type', 'text/plain');
  res.end(`pid=${process.pid} slot=${process.env.CORRAL_WORKER_ID}\n`);
});

// corral passes listeners by the systemd socket-activation protocol: LISTEN_FDS=1 means fd 3.
const target = process.env.LISTEN_FDS ? { fd: 3 } : Number(process.env.PORT || 3000);
server.listen(target, () => {
  console.log(`listening on ${JSON.stringify(target)}`);
});

// Drain on SIGTERM: stop accepting, let in-flight requests finish, then exit.
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
