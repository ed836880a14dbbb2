"""zero-copy, before: the data lives in a list that changes between calls and is converted into a new
ctypes array for every call."""
import ctypes
import time

from advice_common import emit, fixture

N = 1000
ITERATIONS = 2_000
lib = fixture()
t0 = time.perf_counter_ns()
values = [float(i) for i in range(N)]
total = 0.0
for it in range(ITERATIONS):
    values[it % N] += 1.0
    total += lib.fx_sum((ctypes.c_double * N)(*values), N)
emit(time.perf_counter_ns() - t0, total)
