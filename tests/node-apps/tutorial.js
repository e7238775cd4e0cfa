// Express with the graceful-shutdown handler every tutorial teaches: close the server
// on SIGTERM, exit once it has closed. Unmodified for corral.
const express = require('express');

const app = express();
app.get('/', (req, res) => res.send(`pid=${process.pid}\n`));

const server = app.listen(process.env.PORT || 3000, () => {
  console.log(`tutorial: pid ${process.pid} listening`);
});

process.on('SIGTERM', () => {
  console.log('tutorial: SIGTERM received, closing the HTTP server');
  server.close(() => {
    console.log('tutorial: HTTP server closed');
    process.exit(0);
  });
});
