// An HTTP/2 server over TLS (http2.createSecureServer), as Node's docs show it, with the
// compatibility API. Unmodified for corral. TLS_KEY and TLS_CERT name PEM files.
const fs = require('fs');
const http2 = require('http2');

const server = http2.createSecureServer({
  key: fs.readFileSync(process.env.TLS_KEY),
  cert: fs.readFileSync(process.env.TLS_CERT),
});
server.on('request', (req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.end(`pid=${process.pid}\n`);
});
server.listen(process.env.PORT, () => console.log(`h2: pid ${process.pid} listening`));
