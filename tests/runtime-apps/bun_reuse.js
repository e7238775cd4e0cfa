// Bun's own way to use every core: several processes, each Bun.serve with reusePort
// (bench/bun.sh runs two, side by side with corral).
Bun.serve({
  port: Number(process.env.PORT),
  reusePort: true,
  fetch() {
    return new Response(`pid=${process.pid} runtime=bun-reuse\n`);
  },
});
