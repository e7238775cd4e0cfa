#!/bin/sh
# Does its job once, then says so with exit code 3 (a stop exit code).
echo done
exit 3
