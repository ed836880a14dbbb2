"""reuse-buffer (create_string_buffer), after: the advice's rewrite — one buffer, reused."""
import ctypes
import time

from advice_common import advice_lib, emit

SIZE = 4096
ITERATIONS = 100_000
lib = advice_lib()
t0 = time.perf_counter_ns()
total = 0
buf = ctypes.create_string_buffer(SIZE)
for i in range(ITERATIONS):
    total ^= lib.adv_fill_bytes(buf, 64, i)
emit(time.perf_counter_ns() - t0, total)
