"""Calls fx_add_int CALLS times and prints its pid.

Usage: calls_count.py FIXTURE_LIB CALLS
"""
import ctypes
import os
import sys

lib = ctypes.CDLL(sys.argv[1])
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
for i in range(int(sys.argv[2])):
    lib.fx_add_int(i, 1)
print(os.getpid(), flush=True)
