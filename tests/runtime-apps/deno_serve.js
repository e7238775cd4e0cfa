// Deno.serve, as Deno's docs show it, with the drain a load balancer's backend needs:
// on SIGTERM each response says `Connection: close`; a second later server.shutdown()
// finishes the requests under way (Deno's graceful shutdown) and the process exits.
let draining = false;
const server = Deno.serve({ port: Number(Deno.env.get('PORT')) }, () => {
  const headers = draining ? { Connection: 'close' } : {};
  return new Response(`pid=${Deno.pid} runtime=deno-serve\n`, { headers });
});
Deno.addSignalListener('SIGTERM', () => {
  draining = true;
  setTimeout(async () => {
    await server.shutdown();
    Deno.exit(0);
  }, 1000);
});
