"""Calls fx_add_int CALLS times, then execs Python on calls_basic.py (same pid, new image).

Usage: calls_exec.py FIXTURE_LIB CALLS
"""
import ctypes
import os
import sys

lib = ctypes.CDLL(sys.argv[1])
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
for i in range(int(sys.argv[2])):
    lib.fx_add_int(i, 1)
sys.stdout.flush()
here = os.path.dirname(os.path.abspath(__file__))
os.execv(sys.executable, [sys.executable, os.path.join(here, "calls_basic.py"), sys.argv[1]])
