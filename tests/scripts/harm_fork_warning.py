"""Calls C, then forks with every warning shown: CPython 3.12+ warns at os.fork() when it sees
another OS thread, so a traced run must print exactly what an untraced one does.

Usage: harm_fork_warning.py FIXTURE_LIB
"""
import ctypes
import os
import sys
import warnings

warnings.simplefilter("always")
lib = ctypes.CDLL(sys.argv[1])
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
for i in range(50):
    lib.fx_add_int(i, 1)
for round in range(2):
    pid = os.fork()
    if pid == 0:
        for i in range(10):
            lib.fx_add_int(i, 2)
        os._exit(0)
    os.waitpid(pid, 0)
    for i in range(5):
        lib.fx_add_int(i, 3)
print("forked", flush=True)
