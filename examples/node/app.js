// An ordinary Express app with no cluster code in it. corral runs it on every core:
//   corral run --listen 3000 -i max -- node examples/node/app.js
// app.listen(PORT) is served on the socket corral owns (through corral's Node adapter),
// so reloads and crashes never drop a connection.
'use strict';
const express = require('express');
const session = require('express-session');
const { RedisStore } = require('connect-redis');
const { createClient } = require('redis');
const { Worker } = require('worker_threads');

const port = Number(process.env.PORT || 3000);
const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';

async function sessionStore() {
  const client = createClient({ url: redisUrl, socket: { connectTimeout: 1000, reconnectStrategy: false } });
  client.on('error', () => {});
  try {
    await client.connect();
    return { store: new RedisStore({ client, prefix: 'corral-node:' }), kind: 'redis' };
  } catch (e) {
    console.error(`app: Redis at ${redisUrl} is not reachable (${e.message}); sessions are kept in this ` +
      "worker's memory, so other workers don't see them and a restart loses them. " +
      'Start redis-server or set REDIS_URL.');
    return { store: new session.MemoryStore(), kind: 'memory' };
  }
}

// CPU-heavy work runs on a worker thread, so the event loop keeps serving (and sending
// corral its heartbeats) meanwhile.
function countPrimes(n) {
  return new Promise((resolve, reject) => {
    const code = `
      const { parentPort, workerData: n } = require('worker_threads');
      const sieve = new Uint8Array(n); let count = 0;
      for (let i = 2; i < n; i++) { if (!sieve[i]) { count++; for (let j = i * i; j < n; j += i) sieve[j] = 1; } }
      parentPort.postMessage(count);`;
    const worker = new Worker(code, { eval: true, workerData: n });
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

async function main() {
  const { store, kind } = await sessionStore();
  const app = express();
  app.use(session({
    store,
    secret: process.env.SESSION_SECRET || 'corral-example-secret',
    resave: false,
    saveUninitialized: false,
  }));
  app.get('/', (req, res) => res.send(`hello from pid ${process.pid} slot ${process.env.NODE_APP_INSTANCE}\n`));
  app.get('/health', (req, res) => res.send('ok\n'));
  app.get('/heavy', async (req, res) => {
    const n = Math.min(Number(req.query.n) || 100000, 50000000);
    res.json({ n, primes: await countPrimes(n) });
  });
  app.post('/login', (req, res) => {
    const user = String(req.query.user || '');
    if (!user || user.length > 64) return res.status(400).send('user must be 1 to 64 characters\n');
    req.session.user = user;
    res.json({ user, served_by: process.pid });
  });
  app.get('/session', (req, res) => {
    if (!req.session.user) return res.status(401).send('no session; POST /login?user=NAME first\n');
    res.json({ user: req.session.user, served_by: process.pid, store: kind });
  });
  app.listen(port, () => console.log(`app: pid ${process.pid} listening on ${port}`));
}

main();
