// COUNT Socket.IO clients of URL (websocket transport), each sending an acknowledged
// `echo` every 20 ms, with the retries Socket.IO's docs give for at-least-once delivery
// (an emit whose ack was lost with its connection is sent again after the reconnect).
// Prints "all connected"; at a line on stdin, stops sending, asks each client's worker
// once more, waits for the acks in flight and prints one JSON line: the disconnect
// reasons, the echoes acked and failed, and per client the pids that served it, last one
// last. Gives up after LIMIT_MS.
const { io } = require('socket.io-client');

const [url] = process.argv.slice(2);
const count = Number(process.env.COUNT || 8);
const reasons = [];
const pids = [];
const sockets = [];
let acked = 0;
let failed = 0;
let pending = 0;
let connected = 0;
let stopping = false;

function summary(timedOut) {
  console.log(JSON.stringify({ reasons, acked, failed, pending, pids, timedOut }));
  process.exit(0);
}
function maybeDone() {
  if (stopping && pending === 0) summary(false);
}

for (let i = 0; i < count; i += 1) {
  const served = [];
  pids.push(served);
  const socket = io(url, {
    transports: ['websocket'], reconnectionDelay: 50, reconnectionDelayMax: 200, retries: 3, ackTimeout: 2000,
  });
  sockets.push(socket);
  let n = 0;
  socket.on('connect', () => {
    connected += 1;
    if (connected === count) console.log('all connected');
  });
  socket.on('disconnect', (reason) => reasons.push(reason));
  const timer = setInterval(() => {
    if (stopping) { clearInterval(timer); return; }
    if (!socket.connected) return;
    n += 1;
    pending += 1;
    socket.emit('echo', n, (err, answer) => {
      pending -= 1;
      if (err) failed += 1;
      else {
        acked += 1;
        if (served[served.length - 1] !== answer.pid) served.push(answer.pid);
      }
      maybeDone();
    });
  }, 20);
}
// At the stop, each client asks once more (queued while it reconnects), so the last pid
// it records is the worker it ends on.
process.stdin.once('data', () => {
  stopping = true;
  sockets.forEach((socket, i) => {
    pending += 1;
    socket.emit('echo', 'last', (err, answer) => {
      pending -= 1;
      if (err) failed += 1;
      else if (pids[i][pids[i].length - 1] !== answer.pid) pids[i].push(answer.pid);
      maybeDone();
    });
  });
});
setTimeout(() => summary(true), Number(process.env.LIMIT_MS || 60000)).unref();
