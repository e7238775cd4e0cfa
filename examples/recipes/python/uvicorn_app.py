"""An ASGI app under uvicorn that drains without failing a kept-alive request.

    corral run --listen 8000 -i 2 -- python3 uvicorn_app.py

uvicorn takes corral's socket with `fd=3`. On SIGTERM uvicorn alone closes idle
keep-alive connections at once, which races clients sending their next request on
them. So on SIGTERM this launcher first answers every request with `Connection: close`
for DRAIN_GRACE (kept-alive clients reconnect, to another worker), then lets uvicorn
shut down as usual (stop accepting, finish in-flight requests, exit).
"""

import os
import threading

import uvicorn

DRAIN_GRACE = 1.0  # seconds of `Connection: close` answers before uvicorn's own shutdown
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
    def handle_exit(self, sig, frame):
        if draining.is_set():
            return super().handle_exit(sig, frame)
        draining.set()
        threading.Timer(DRAIN_GRACE, super().handle_exit, (sig, frame)).start()


def main():
    fd = 3 if os.environ.get("LISTEN_FDS") else None
    port = int(os.environ.get("PORT", "8000"))
    config = uvicorn.Config(close_when_draining, fd=fd, port=port, log_level="warning", lifespan="off")
    DrainingServer(config).run()


if __name__ == "__main__":
    main()
