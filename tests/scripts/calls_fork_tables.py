"""The parent calls fx_add_int from SITES distinct call sites, each at its own stack depth (so
with FFIPROF_STACKS=1 every site has its own whole stack), then forks a child that calls
fx_scale CHILD times from one line and ends with os._exit.

Usage: calls_fork_tables.py FIXTURE_LIB SITES CHILD   (prints the child's pid and its call line)
"""
import ctypes
import os
import sys

lib = ctypes.CDLL(sys.argv[1])
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
lib.fx_scale.argtypes = [ctypes.c_double]
sites, child_calls = int(sys.argv[2]), int(sys.argv[3])

# One function per site, each calling the C function from its own line; function i calls
# function i-1 first, so the stacks grow one frame per site.
source = "".join(
    f"def site_{i}(depth):\n"
    f"    if depth > 0:\n"
    f"        site_{i - 1 if i else 0}(depth - 1)\n"
    f"    lib.fx_add_int({i}, depth)\n"
    for i in range(sites)
)
namespace = {"lib": lib}
exec(compile(source, "parent_sites.py", "exec"), namespace)
for i in range(0, sites, 50):
    namespace[f"site_{i}"](min(i, 40))

CHILD_LINE = sys._getframe().f_lineno + 4
pid = os.fork()
if pid == 0:
    for i in range(child_calls):
        lib.fx_scale(1.0)
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0
print(pid, CHILD_LINE)
