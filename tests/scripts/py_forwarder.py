"""Calls made through a generic forwarder shaped like llvmlite's (`binding/ffi.py`: one
`_lib_fn_wrapper.__call__` calls every C function), from three lines and two C functions; through
a decorator's wrapper around that forwarder (two forwarders nested); and through a plain helper
with named parameters, which is not a forwarder. Prints TAG=LINE for each tagged line.

Usage: py_forwarder.py FIXTURE_LIB
"""
import ctypes
import functools
import re
import sys
import threading

lib = ctypes.CDLL(sys.argv[1])
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
lib.fx_add_int.restype = ctypes.c_int
lib.fx_scale.argtypes = [ctypes.c_double]
lib.fx_scale.restype = ctypes.c_double


class _lib_fn_wrapper(object):
    def __init__(self, lock, cfn):
        self._lock = lock
        self._cfn = cfn

    def __call__(self, *args, **kwargs):
        with self._lock:
            return self._cfn(*args, **kwargs)  # FORWARD


class _lib_wrapper(object):
    """llvmlite's `ffi.lib`: attribute access hands out forwarders."""

    def __init__(self, dll):
        self._dll = dll
        self._lock = threading.RLock()
        self._fns = {}

    def __getattr__(self, name):
        fn = self._fns.get(name)
        if fn is None:
            fn = self._fns[name] = _lib_fn_wrapper(self._lock, getattr(self._dll, name))
        return fn


ffi_lib = _lib_wrapper(lib)


def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)  # DECORATOR

    return wrapper


def add(a, b):
    return lib.fx_add_int(a, b)  # HELPER


def work():
    scale_logged = logged(ffi_lib.fx_scale)
    total = 0
    for i in range(300):
        total += ffi_lib.fx_add_int(i, 1)  # SITE-A: 300 calls
        if i % 3 == 0:
            total += ffi_lib.fx_scale(float(i))  # SITE-B: 100 calls
    for i in range(50):
        total += ffi_lib.fx_add_int(i, i)  # SITE-C: 50 calls
    for i in range(40):
        total += scale_logged(2.0)  # SITE-D: 40 calls, through two forwarders
    for i in range(70):
        total += add(i, 2)  # CALLER: 70 calls of the helper
    return total


assert work() == sum(i + 1 for i in range(300)) + sum(2.0 * i for i in range(0, 300, 3)) + sum(
    2 * i for i in range(50)
) + 40 * 4.0 + sum(i + 2 for i in range(70))
tags = {}
for n, line in enumerate(open(__file__).read().splitlines()):
    m = re.search(r"  # ([A-Z][A-Z-]*)", line)
    if m:
        tags[m.group(1)] = n + 1
print(" ".join("%s=%d" % kv for kv in sorted(tags.items())))
