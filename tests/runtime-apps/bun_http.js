// node:http under Bun, the form Bun's docs show, with the drain a load balancer's
// backend needs: on SIGTERM each response says `Connection: close`, and after a second
// (every busy keep-alive client has had one) the server stops and exits once idle.
const http = require('node:http');
let draining = false;
const server = http.createServer((req, res) => {
  if (draining) res.setHeader('Connection', 'close');
  res.end(`pid=${process.pid} runtime=bun-node-http\n`);
});
server.listen(Number(process.env.PORT));
process.on('SIGTERM', () => {
  draining = true;
  setTimeout(() => {
    server.close(() => process.exit(0));
    server.closeIdleConnections();
  }, 1000);
});
