"""Makes CALLS calls, prints `ready PID`, then sleeps until killed (or stdin closes).

Usage: calls_then_wait.py FIXTURE_LIB CALLS
"""
import ctypes
import os
import sys
import time

lib = ctypes.CDLL(sys.argv[1])
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
for i in range(int(sys.argv[2])):
    lib.fx_add_int(i, 1)
print("ready", os.getpid(), flush=True)
time.sleep(60)
