"""leak (verbs of its own), after: every leased object given back."""
import time

from advice_common import emit, objects_lib

N = 2_000
lib = objects_lib()
t0 = time.perf_counter_ns()
made = [lib.adv_lease() for _ in range(N)]
for obj in made:
    lib.adv_return(obj)
emit(time.perf_counter_ns() - t0, N, live=lib.adv_live_objects())
