"""use-pydll, before: a tiny C function called through CDLL, which releases and re-takes the GIL."""
import time

from advice_common import emit, fixture

ITERATIONS = 200_000
lib = fixture()
t0 = time.perf_counter_ns()
total = 0.0
for i in range(ITERATIONS):
    total += lib.fx_scale(1.5)
emit(time.perf_counter_ns() - t0, total)
