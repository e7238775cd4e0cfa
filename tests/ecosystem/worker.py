# A background worker that prints as it goes; with `interpreter_args: -u` (unbuffered)
# each line reaches the log at once, as under PM2.
import time

for n in range(100000):
    print(f"tick {n}")
    time.sleep(0.1)
