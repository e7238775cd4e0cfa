// The tutorials' cluster-module app: the primary forks one worker per CPU, each worker
// serves. Unmodified for corral (under corral, every process runs the worker branch).
const cluster = require('cluster');
const http = require('http');
const os = require('os');

if (cluster.isPrimary) {
  console.log(`cluster-app: primary ${process.pid} forking ${os.availableParallelism()} workers`);
  for (let i = 0; i < os.availableParallelism(); i += 1) cluster.fork();
  cluster.on('exit', (worker) => cluster.fork());
} else {
  http.createServer((req, res) => {
    res.end(`pid=${process.pid} worker=${cluster.worker.id}\n`);
  }).listen(process.env.PORT || 3000);
  console.log(`cluster-app: worker ${cluster.worker.id} (pid ${process.pid}) started`);
}
