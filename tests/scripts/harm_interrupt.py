"""Makes CALLS calls, prints `ready PID`, then sleeps in a try/finally until interrupted.
The `finally` must run on Ctrl-C (SIGINT → KeyboardInterrupt), traced or not.

Usage: harm_interrupt.py FIXTURE_LIB CALLS
"""
import ctypes
import os
import sys
import time

lib = ctypes.CDLL(sys.argv[1])
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
for i in range(int(sys.argv[2])):
    lib.fx_add_int(i, 1)
try:
    print("ready", os.getpid(), flush=True)
    time.sleep(60)
finally:
    print("finally", flush=True)
