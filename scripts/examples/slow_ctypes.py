"""The demo application: typical ctypes code with the costs ffiprof is made to find.

- `norms` calls a scalar C function once per point (a bulk sibling `vm_norm_many` exists);
- `total` builds a fresh ctypes array from a Python list on every call;
- `checksum` calls a function whose argtypes/restype were never declared.

Usage: slow_ctypes.py LIBVECMATH [ROUNDS]
"""
import ctypes
import random
import sys

lib = ctypes.CDLL(sys.argv[1])
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
lib.vm_norm.argtypes = [ctypes.c_double, ctypes.c_double]
lib.vm_norm.restype = ctypes.c_double
lib.vm_sum.argtypes = [ctypes.POINTER(ctypes.c_double), ctypes.c_size_t]
lib.vm_sum.restype = ctypes.c_double

random.seed(1)
points = [(random.random(), random.random()) for _ in range(2000)]


def norms(pts):
    return [lib.vm_norm(x, y) for x, y in pts]


def total(values):
    arr = (ctypes.c_double * len(values))(*values)
    return lib.vm_sum(arr, len(values))


def checksum(i):
    return lib.vm_checksum(i)


for r in range(rounds):
    ns = norms(points)
    for chunk in range(0, len(ns), 100):
        total(ns[chunk:chunk + 100])
    checksum(r)
print(f"done: {rounds} rounds over {len(points)} points")
