"""batch, before: one foreign call per element of an array."""
import array
import time

from advice_common import advice_lib, emit

N = 200_000
lib = advice_lib()
t0 = time.perf_counter_ns()
xs = array.array("d", (i * 0.5 for i in range(N)))
out = array.array("d", bytes(8 * N))
for i, x in enumerate(xs):
    out[i] = lib.adv_scale(x, 1.5)
result = sum(out)
emit(time.perf_counter_ns() - t0, result)
