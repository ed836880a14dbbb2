"""gil-contention, before: 4 threads each calling a tiny C function through CDLL, which releases
the GIL around every call, so the threads hand it to each other on every call."""
import threading
import time

from advice_common import emit, fixture

THREADS = 4
ITERATIONS = 50_000
lib = fixture()
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
