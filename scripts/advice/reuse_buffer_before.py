"""reuse-buffer, before: a new ctypes output array for every call."""
import ctypes
import time

from advice_common import emit, fixture

N = 512
ITERATIONS = 50_000
DoubleArray = ctypes.c_double * N
lib = fixture()
t0 = time.perf_counter_ns()
total = 0.0
for i in range(ITERATIONS):
    buf = DoubleArray()
    lib.fx_fill(buf, N, float(i))
    total += buf[i % N]
emit(time.perf_counter_ns() - t0, total)
