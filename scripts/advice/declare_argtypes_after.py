"""declare-argtypes, after: the advice's rewrite — argtypes (and restype) declared from the C
prototype, int fx_add_int(int, int)."""
import ctypes
import time

from advice_common import emit, library_path

ITERATIONS = 300_000
lib = ctypes.CDLL(library_path("libffifixture.so"))
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
lib.fx_add_int.restype = ctypes.c_int
t0 = time.perf_counter_ns()
total = 0
for i in range(ITERATIONS):
    total += lib.fx_add_int(i & 0xFFFF, 3)
emit(time.perf_counter_ns() - t0, total)
