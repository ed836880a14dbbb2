"""zero-copy, after: the advice's rewrite — the data lives in an array.array updated in place, and the
C function reads its memory through a view made once."""
import array
import ctypes
import time

from advice_common import emit, fixture

N = 1000
ITERATIONS = 2_000
lib = fixture()
t0 = time.perf_counter_ns()
values = array.array("d", (float(i) for i in range(N)))
view = (ctypes.c_double * N).from_buffer(values)
total = 0.0
for it in range(ITERATIONS):
    values[it % N] += 1.0
    total += lib.fx_sum(view, N)
emit(time.perf_counter_ns() - t0, total)
