// HTTP/2 load for corral's tests: SESSIONS sessions, each keeping STREAMS requests in
// flight, until STOP_FILE exists (or LIMIT_MS passes). A session that gets GOAWAY is
// replaced by a new one; a request that fails counts. Prints a JSON summary at the end.
const fs = require('fs');
const http2 = require('http2');

const [url] = process.argv.slice(2);
const sessions = Number(process.env.SESSIONS || 4);
const streams = Number(process.env.STREAMS || 2);
const stopFile = process.env.STOP_FILE;
const deadline = Date.now() + Number(process.env.LIMIT_MS || 60000);
const summary = { ok: 0, failed: 0, goaways: 0, errors: [] };
const stopping = () => Date.now() > deadline || (stopFile && fs.existsSync(stopFile));
let running = 0;

function fail(e) {
  summary.failed += 1;
  if (summary.errors.length < 5) summary.errors.push(String(e && (e.code || e.message) || e));
}

function session() {
  const s = http2.connect(url, { rejectUnauthorized: false });
  let open = true;
  let goaway = false;
  running += 1;
  s.on('error', () => {});
  s.on('goaway', () => { summary.goaways += 1; goaway = true; });
  s.on('close', () => {
    open = false;
    running -= 1;
    if (!stopping()) session();
    else if (running === 0) finish();
  });
  const loop = () => {
    if (!open || s.closed || s.destroyed || s.closing) return;
    if (stopping()) { s.close(); return; }
    const req = s.request({ ':path': '/' });
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      if (body.startsWith('pid=')) summary.ok += 1; else fail(`bad body ${body}`);
      loop();
    });
    req.on('error', (e) => {
      // A stream the server refused with its GOAWAY was never processed: it is retried
      // on the next session. Any other error is a failed request.
      if (goaway) { summary.retried = (summary.retried || 0) + 1; return; }
      fail(e);
    });
    req.end();
  };
  for (let i = 0; i < streams; i += 1) loop();
}

let finished = false;
function finish() {
  if (finished) return;
  finished = true;
  console.log(JSON.stringify(summary));
  process.exit(0);
}
for (let i = 0; i < sessions; i += 1) session();
setInterval(() => { if (stopping() && running === 0) finish(); }, 100);
