"""A long-running target for attaching with --site-skip: each round calls the fixture through a
generic forwarder (llvmlite's shape), through a helper with named parameters, and ctypes.cast,
once each. Prints "TAG=LINE ..." for its tagged lines, then "ready", runs until STOP_FILE exists,
and prints "done ROUNDS".

Usage: attach_sites.py STOP_FILE FIXTURE_LIB
"""
import ctypes
import os
import re
import sys
import threading

stop_file = sys.argv[1]
lib = ctypes.CDLL(sys.argv[2])
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
lib.fx_add_int.restype = ctypes.c_int


class _lib_fn_wrapper(object):
    def __init__(self, lock, cfn):
        self._lock = lock
        self._cfn = cfn

    def __call__(self, *args, **kwargs):
        with self._lock:
            return self._cfn(*args, **kwargs)  # FORWARD


forwarded_add = _lib_fn_wrapper(threading.RLock(), lib.fx_add_int)
values = (ctypes.c_double * 4)(1.0, 2.0, 3.0, 4.0)


def add(a, b):
    return lib.fx_add_int(a, b)  # HELPER


def rounds(n):
    for _ in range(n):
        assert forwarded_add(1, 2) == 3  # SITE-A
        assert add(3, 4) == 7  # CALLER
        p = ctypes.cast(values, ctypes.POINTER(ctypes.c_double))  # CAST
        assert p[3] == 4.0
    return n


tags = {}
for n, line in enumerate(open(__file__).read().splitlines()):
    m = re.search(r"  # ([A-Z][A-Z-]*)", line)
    if m:
        tags[m.group(1)] = n + 1
print(" ".join("%s=%d" % kv for kv in sorted(tags.items())), flush=True)
done = rounds(100)
print("ready", flush=True)
while not os.path.exists(stop_file):
    done += rounds(100)
print("done", done, flush=True)
