"""batch, after: the advice's rewrite — one call to the bulk sibling over the whole array."""
import array
import ctypes
import time

from advice_common import advice_lib, emit

N = 200_000
lib = advice_lib()
t0 = time.perf_counter_ns()
xs = array.array("d", (i * 0.5 for i in range(N)))
out = array.array("d", bytes(8 * N))
n = len(xs)
lib.adv_scale_many((ctypes.c_double * n).from_buffer(xs), (ctypes.c_double * n).from_buffer(out), n, 1.5)
result = sum(out)
emit(time.perf_counter_ns() - t0, result)
