// A WebSocket server with `ws` on an http server. With FOLLOW_CORRAL_DOCS=1 it adds the
// two lines docs/drain.md shows: close every socket with 1001 when corral drains.
const http = require('http');
const { WebSocketServer } = require('ws');

const server = http.createServer((req, res) => res.end(`pid=${process.pid}\n`));
const wss = new WebSocketServer({ server });
wss.on('connection', (ws) => {
  ws.send(`hello from ${process.pid}`);
  ws.on('message', (m) => ws.send(m));
});

if (process.env.FOLLOW_CORRAL_DOCS === '1') {
  process.on('corral:drain', () => {
    for (const ws of wss.clients) ws.close(1001, 'server restarting');
  });
}

server.listen(process.env.PORT, () => console.log(`ws: pid ${process.pid} listening`));
