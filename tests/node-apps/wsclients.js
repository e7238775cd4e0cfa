// COUNT WebSocket clients of URL; each prints nothing until all have closed, then one
// JSON line: the close codes seen. Gives up after LIMIT_MS.
const WebSocket = require('ws');

const [url] = process.argv.slice(2);
const count = Number(process.env.COUNT || 8);
const codes = [];
let open = 0;
for (let i = 0; i < count; i += 1) {
  const ws = new WebSocket(url);
  ws.on('open', () => { open += 1; if (open === count) console.log('all open'); });
  ws.on('error', () => {});
  ws.on('close', (code) => {
    codes.push(code);
    if (codes.length === count) {
      console.log(JSON.stringify({ codes }));
      process.exit(0);
    }
  });
}
setTimeout(() => { console.log(JSON.stringify({ codes, timedOut: true })); process.exit(0); },
  Number(process.env.LIMIT_MS || 60000));
