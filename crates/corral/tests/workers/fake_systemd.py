"""What systemd does for a socket unit, for the tests: hold a listening socket for good
and start the service (corral) with it as fd 3 (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES),
again after each line on stdin (`systemctl restart`: stop it, start it again).

usage: fake_systemd.py CORRAL ARGS... -- with @PORT@ in ARGS replaced by the port.
"""

import os
import signal
import socket
import sys
import time

sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
sock.listen(1024)
port = sock.getsockname()[1]
print(f"holding {port}", flush=True)
argv = [a.replace("@PORT@", str(port)) for a in sys.argv[1:]]


def start():
    pid = os.fork()
    if pid == 0:
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1)  # this process's stdout is the test's line protocol
        os.dup2(sock.fileno(), 3)
        os.set_inheritable(3, True)
        env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="web")
        os.execve(argv[0], argv, env)
    return pid


pid = start()
for line in sys.stdin:
    os.kill(pid, signal.SIGTERM)
    os.waitpid(pid, 0)
    print("stopped", flush=True)
    time.sleep(1.0)  # the restart's gap: connections wait in the socket's queue
    pid = start()
    print("started again", flush=True)
os.kill(pid, signal.SIGTERM)
os.waitpid(pid, 0)
