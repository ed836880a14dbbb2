"""The parent calls fx_add_int PARENT times, a forked child CHILD times (ending with os._exit).

Usage: calls_fork.py FIXTURE_LIB PARENT CHILD   (prints the child's pid)
"""
import ctypes
import os
import sys

lib = ctypes.CDLL(sys.argv[1])
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
parent_calls, child_calls = int(sys.argv[2]), int(sys.argv[3])
for i in range(parent_calls):
    lib.fx_add_int(i, 1)
pid = os.fork()
if pid == 0:
    for i in range(child_calls):
        lib.fx_scale.argtypes = [ctypes.c_double]
        lib.fx_scale(1.0)
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0
print(pid)
