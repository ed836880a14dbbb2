"""Makes CALLS calls, prints `ready PID`, then sleeps until killed (or stdin closes).

Usage: calls_then_wait.py FIXTURE_LIB CALLS [handle-term|default-term]
With `handle-term`, the program installs its own SIGTERM handler first, which exits with status 3;
with `default-term`, it sets SIGTERM to its default action itself after the calls.
"""
import ctypes
import os
import signal
import sys
import time

if len(sys.argv) > 3 and sys.argv[3] == "handle-term":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))
lib = ctypes.CDLL(sys.argv[1])
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
for i in range(int(sys.argv[2])):
    lib.fx_add_int(i, 1)
if len(sys.argv) > 3 and sys.argv[3] == "default-term":
    assert signal.signal(signal.SIGTERM, signal.SIG_DFL) == signal.SIG_DFL
print("ready", os.getpid(), flush=True)
time.sleep(60)
