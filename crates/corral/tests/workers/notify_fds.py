"""A stdlib Python HTTP worker that first sends sd_notify datagrams carrying fds.

FDS_ROUNDS datagrams, each `STATUS=round N` with FDS_PER copies of an fd attached, then
READY=1; then it serves GET on the listener corral passed as fd 3 (pid in the body).
"""
import http.server
import os
import socket

notify = os.environ["NOTIFY_SOCKET"]
rounds = int(os.environ.get("FDS_ROUNDS", "20"))
per = int(os.environ.get("FDS_PER", "9"))
sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sender.connect(notify)
null = os.open("/dev/null", os.O_RDONLY)
for i in range(rounds):
    status = f"STATUS=round {i}".encode()
    if per:
        socket.send_fds(sender, [status], [null] * per)
    else:
        sender.send(status)
sender.send(b"READY=1")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = f"pid={os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
server.socket.close()
server.socket = socket.socket(fileno=3)
server.serve_forever()
