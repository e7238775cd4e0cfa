// A TypeScript server in the erasable syntax Node runs by stripping types.
import http from 'node:http';

const port: number = Number(process.env.PORT);
const server: http.Server = http.createServer((_req: http.IncomingMessage, res: http.ServerResponse) => {
  res.end(`pid=${process.pid} runtime=node-ts\n`);
});
server.listen(port);
