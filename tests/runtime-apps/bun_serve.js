// Bun.serve, as Bun's docs show it, with the drain a load balancer's backend needs: on
// SIGTERM each response says `Connection: close`; a second later server.stop() lets
// the requests under way finish (Bun's graceful stop) and the process exits.
let draining = false;
const server = Bun.serve({
  port: Number(process.env.PORT),
  fetch() {
    const headers = draining ? { Connection: 'close' } : {};
    return new Response(`pid=${process.pid} runtime=bun-serve\n`, { headers });
  },
});
process.on('SIGTERM', () => {
  draining = true;
  setTimeout(async () => {
    await server.stop();
    process.exit(0);
  }, 1000);
});
