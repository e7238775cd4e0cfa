// An app as the PM2 tutorials write it: listen(PORT) from the environment, nothing else.
const http = require('http');
const server = http.createServer((req, res) => {
  res.setHeader('Content-Type', 'text/plain');
  res.end(`pid=${process.pid} app=${process.env.APP_NAME || '-'} mode=${process.env.MODE || '-'} inst=${process.env.INSTANCE_ID || '-'} pm_id=${process.env.pm_id} name=${process.env.name}\n`);
});
server.on('error', (err) => {
  console.error(`listen failed: ${err.code} ${err.syscall} ${err.port}`);
  process.exit(1);
});
server.listen(process.env.PORT, () => console.log(`listening on ${server.address().port}`));
