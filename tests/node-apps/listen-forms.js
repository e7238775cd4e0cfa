// Every listen() form a framework's docs show, one server per form, each on its own
// port: FRAMEWORK (http | express | fastify | hapi), PORTS (comma-separated, one per
// form) and FORMS (the same count; default: every form below). Unmodified for corral:
// nothing here knows it runs under corral. Each server answers `FRAMEWORK FORM pid=PID`.
'use strict';

const framework = process.env.FRAMEWORK || 'http';
const ports = (process.env.PORTS || '').split(',').filter(Boolean).map(Number);
const forms = (process.env.FORMS || 'none,0.0.0.0,::,localhost,127.0.0.1,options').split(',');
if (ports.length !== forms.length) {
  console.error(`listen-forms: ${forms.length} forms need as many PORTS, got ${ports.length}`);
  process.exit(2);
}

// The host each form names (`none` names none; `options` is the options-object form
// with '0.0.0.0', as container guides write it).
const hostOf = (form) => (form === 'none' ? undefined : form === 'options' ? '0.0.0.0' : form);
const text = (form) => `${framework} ${form} pid=${process.pid}\n`;
const listening = (form, port) => console.log(`listen-forms: ${framework} ${form} listening on ${port}`);

function startHttp(form, port) {
  const http = require('http');
  const server = http.createServer((req, res) => res.end(text(form)));
  const host = hostOf(form);
  if (form === 'options') server.listen({ port, host }, () => listening(form, port));
  else if (host === undefined) server.listen(port, () => listening(form, port));
  else server.listen(port, host, () => listening(form, port));
}

function startExpress(form, port) {
  const app = require('express')();
  app.get('/', (req, res) => res.send(text(form)));
  const host = hostOf(form);
  // Express's docs: app.listen(port, [host], [backlog], [callback]).
  if (host === undefined) app.listen(port, () => listening(form, port));
  else app.listen(port, host, () => listening(form, port));
}

async function startFastify(form, port) {
  const fastify = require('fastify')();
  fastify.get('/', async () => text(form));
  const host = hostOf(form);
  // Fastify's docs: fastify.listen({ port, host }); without a host it listens on localhost.
  await fastify.listen(host === undefined ? { port } : { port, host });
  listening(form, port);
}

async function startHapi(form, port) {
  const Hapi = require('@hapi/hapi');
  const host = hostOf(form);
  // hapi's docs: Hapi.server({ port, host }); `address` is what it binds when given.
  const options = form === 'options' ? { port, address: host } : host === undefined ? { port } : { port, host };
  const server = Hapi.server(options);
  server.route({ method: 'GET', path: '/', handler: () => text(form) });
  await server.start();
  listening(form, port);
}

const start = { http: startHttp, express: startExpress, fastify: startFastify, hapi: startHapi }[framework];
forms.forEach((form, i) => {
  Promise.resolve(start(form, ports[i])).catch((e) => {
    console.error(`listen-forms: ${framework} ${form}: ${e.message}`);
    process.exit(1);
  });
});
