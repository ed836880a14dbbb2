"""leak, after: the advice's rewrite — every object released when done."""
import time

from advice_common import emit, objects_lib

N = 2_000
lib = objects_lib()
t0 = time.perf_counter_ns()
made = [lib.adv_obj_new() for _ in range(N)]
for obj in made:
    lib.adv_obj_free(obj)
emit(time.perf_counter_ns() - t0, N, live=lib.adv_live_objects())
