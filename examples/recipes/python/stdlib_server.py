"""A Python stdlib HTTP server that drains the way corral expects (docs/drain.md).

Run it under corral as its users would:

    corral run --listen 8000 -i 2 -- python3 stdlib_server.py

It serves on corral's socket (fd 3, systemd's LISTEN_FDS protocol) and on SIGTERM
1. stops accepting, 2. finishes the requests in flight, 3. answers the next request on
each kept-alive connection with `Connection: close` and closes connections idle for a
2 s, 4. exits once every connection is closed.
"""

import os
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

draining = threading.Event()
# Idle keep-alive connections are closed after this long; also bounds the drain.
IDLE_TIMEOUT = 2.0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = IDLE_TIMEOUT
    # Headers and body go out in separate writes: without TCP_NODELAY each kept-alive
    # response waits out the client's delayed ACK (40 ms).
    disable_nagle_algorithm = True

    def do_GET(self):
        body = f"pid={os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if draining.is_set():
            # The client reconnects for its next request, to a worker that is not leaving.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for the connections' threads
    block_on_close = True

    def __init__(self):
        # corral's listener is fd 3 (LISTEN_FDS); fall back to a port of our own outside corral.
        super().__init__(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.socket.close()
        if os.environ.get("LISTEN_FDS"):
            self.socket = socket.socket(fileno=3)
            # Every worker wakes for each new connection and one gets it: on a blocking
            # socket the others would wait in accept() (socketserver selects, then
            # accepts) and could not finish a drain until the next connection came.
            # Non-blocking, a lost race is an OSError that socketserver ignores.
            self.socket.setblocking(False)
        else:
            self.socket = socket.create_server(("127.0.0.1", int(os.environ.get("PORT", "8000"))))
        self.server_address = self.socket.getsockname()


def main():
    server = Server()

    def drain(signum, frame):
        draining.set()
        # shutdown() waits for serve_forever to return: call it off the signal handler.
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)
    server.serve_forever()
    server.socket.close()  # stop accepting; corral keeps the queue for the other workers
    # Kept-alive connections get `Connection: close` on their next response, idle ones
    # time out; server_close() waits for every connection's thread.
    server.server_close()


if __name__ == "__main__":
    main()
