// A Socket.IO server as its docs show it, with no shutdown code at all: acknowledges each
// `echo` with the worker's pid. Unmodified for corral.
const http = require('http');
const { Server } = require('socket.io');

const server = http.createServer((req, res) => res.end(`pid=${process.pid}\n`));
const io = new Server(server);
io.on('connection', (socket) => {
  socket.on('echo', (n, ack) => ack({ n, pid: process.pid }));
});
server.listen(process.env.PORT, () => console.log(`socketio: pid ${process.pid} listening`));
