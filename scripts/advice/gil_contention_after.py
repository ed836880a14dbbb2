"""gil-contention, after: the advice's rewrite — the short call keeps the GIL (PyDLL), so the
threads trade it at the interpreter's switch interval instead of on every call."""
import ctypes
import threading
import time

from advice_common import emit, fixture

THREADS = 4
ITERATIONS = 50_000
lib = fixture(loader=ctypes.PyDLL)
totals = [0.0] * THREADS


def work(k):
    total = 0.0
    for i in range(ITERATIONS):
        total += lib.fx_scale(1.5)
    totals[k] = total


t0 = time.perf_counter_ns()
threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
emit(time.perf_counter_ns() - t0, sum(totals))
