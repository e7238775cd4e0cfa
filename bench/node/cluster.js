// Node's own cluster module with N workers (default 2) running APP (default
// examples/node/server.js):
// the reference corral is measured against. Linux default scheduling: round-robin.
'use strict';
const cluster = require('cluster');
const path = require('path');

if (cluster.isPrimary) {
  const n = Number(process.env.WORKERS || 2);
  for (let i = 0; i < n; i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    if (!process.exitCode) cluster.fork();
  });
  process.on('SIGTERM', () => {
    process.exitCode = 0;
    for (const w of Object.values(cluster.workers)) w.kill();
    setTimeout(() => process.exit(0), 2000).unref();
  });
} else {
  require(process.env.APP || path.join(__dirname, '../../examples/node/server.js'));
}
