// A plain `http` server that calls listen(process.env.PORT), as most Node apps do; used
// by corral's tests. Routes: /block (hangs the event loop), /big (a 32 MiB answer).
// Knobs: READY_AFTER_MS (process.send('ready') after that long),
// OTHER_PORT (also listen there, on a port corral does not own).
'use strict';
const http = require('http');

const server = http.createServer((req, res) => {
  if (req.url === '/block') {
    res.end('blocking\n');
    setImmediate(() => { for (;;) { /* a hung event loop */ } });
    return;
  }
  if (req.url === '/big') {
    res.end(Buffer.alloc(32 * 1024 * 1024, 'x'));
    return;
  }
  res.setHeader('Content-Type', 'text/plain');
  res.end(`pid=${process.pid} slot=${process.env.NODE_APP_INSTANCE}\n`);
});
server.listen(process.env.PORT, () => console.log(`plain: pid ${process.pid} listening`));

if (process.env.READY_AFTER_MS) {
  setTimeout(() => process.send('ready'), Number(process.env.READY_AFTER_MS));
}

if (process.env.OTHER_PORT !== undefined) {
  const other = http.createServer((req, res) => res.end(`other pid=${process.pid}\n`));
  other.listen(Number(process.env.OTHER_PORT), '127.0.0.1', () => {
    console.log(`plain: other listener on port ${other.address().port}`);
  });
}

process.on('message', (msg) => {
  if (msg === 'shutdown') console.log(`plain: pid ${process.pid} got the shutdown message`);
});
