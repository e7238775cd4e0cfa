"""An ASGI app under uvicorn that drains without failing a kept-alive request.

    corral run --listen 8000 -i 2 -- python3 uvicorn_app.py

uvicorn serves corral's socket (fd 3). On SIGTERM uvicorn alone closes idle
keep-alive connections at once, which races clients sending their next request on
them. uvicorn's shutdown also closes connections it accepted an instant before but whose
request has not arrived yet. So on SIGTERM this launcher
1. answers every request with `Connection: close` for DRAIN_GRACE (kept-alive clients
   reconnect, to another worker);
2. stops accepting, and gives the connections it just accepted FIRST_REQUEST_GRACE to
   send their request;
3. lets uvicorn shut down as usual (finish in-flight requests, exit).
A second SIGTERM or SIGINT shuts down at once.
"""

import os
import socket
import threading
import time

import uvicorn

DRAIN_GRACE = 1.0  # seconds of `Connection: close` answers before uvicorn's own shutdown
FIRST_REQUEST_GRACE = 0.5  # seconds for just-accepted connections to send their request
draining = threading.Event()


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = f"pid={os.getpid()}\n".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def close_when_draining(scope, receive, send):
    """Middleware: while draining, every response says `Connection: close`."""

    async def send_with_close(message):
        if message["type"] == "http.response.start" and draining.is_set():
            message = dict(message, headers=list(message.get("headers", [])) + [(b"connection", b"close")])
        await send(message)

    await app(scope, receive, send_with_close)


class DrainingServer(uvicorn.Server):
    drain_started = None

    def handle_exit(self, sig, frame):
        if self.drain_started is not None:
            return super().handle_exit(sig, frame)
        draining.set()
        self.drain_started = time.monotonic()

    async def on_tick(self, counter):
        should_exit = await super().on_tick(counter)
        if self.drain_started is None:
            return should_exit
        elapsed = time.monotonic() - self.drain_started
        if elapsed >= DRAIN_GRACE:
            for server in self.servers:
                server.close()  # stop accepting; corral keeps the queue for the other workers
        return should_exit or elapsed >= DRAIN_GRACE + FIRST_REQUEST_GRACE


def main():
    port = int(os.environ.get("PORT", "8000"))
    config = uvicorn.Config(close_when_draining, port=port, log_level="warning", lifespan="off")
    # corral's socket is fd 3 (LISTEN_FDS). socket(fileno=3) finds its family (TCP), so
    # asyncio sets TCP_NODELAY on connections; uvicorn's own `fd=3` takes it for a Unix
    # socket and every kept-alive response then waits out a delayed ACK.
    sockets = [socket.socket(fileno=3)] if os.environ.get("LISTEN_FDS") else None
    DrainingServer(config).run(sockets=sockets)


if __name__ == "__main__":
    main()
