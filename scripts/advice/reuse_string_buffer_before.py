"""reuse-buffer (create_string_buffer), before: a new byte buffer for every call."""
import ctypes
import time

from advice_common import advice_lib, emit

SIZE = 4096
ITERATIONS = 100_000
lib = advice_lib()
t0 = time.perf_counter_ns()
total = 0
for i in range(ITERATIONS):
    buf = ctypes.create_string_buffer(SIZE)
    total ^= lib.adv_fill_bytes(buf, 64, i)
emit(time.perf_counter_ns() - t0, total)
