// Fastify with an onClose hook and the usual SIGTERM handler. Unmodified for corral.
const fastify = require('fastify')();

fastify.get('/', async () => `pid=${process.pid}\n`);
fastify.addHook('onClose', async () => {
  console.log('fastify: onClose hook ran');
});

process.on('SIGTERM', async () => {
  await fastify.close();
  process.exit(0);
});

fastify.listen({ port: Number(process.env.PORT), host: '127.0.0.1' }).then(() => {
  console.log(`fastify: pid ${process.pid} listening`);
});
