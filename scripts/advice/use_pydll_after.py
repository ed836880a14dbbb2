"""use-pydll, after: the advice's rewrite — the same function through PyDLL, which keeps the GIL."""
import ctypes
import time

from advice_common import emit, fixture

ITERATIONS = 200_000
lib = fixture(loader=ctypes.PyDLL)
t0 = time.perf_counter_ns()
total = 0.0
for i in range(ITERATIONS):
    total += lib.fx_scale(1.5)
emit(time.perf_counter_ns() - t0, total)
