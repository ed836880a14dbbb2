"""Calls each extension-module fixture (tests/pyext/, built by scripts/build-pyext) N times in a
loop of its own, so that nearly every call repeats the thread's last one (same line, same
function): the calls the agent's lean paths take. Prints what came back, so a traced run can be
compared with an untraced one.

Usage: pyext_repeats.py N   (PYTHONPATH holds the venv's fixture directory)
"""
import array
import sys

import fxcffi
import fxcy
import fxext
import fxpb

n = int(sys.argv[1])
buf = array.array("d", [1.0, 2.0, 3.0, 4.0])
acc = fxcy.Acc()
counter = fxpb.Counter()
cbuf = fxcffi.ffi.new("double[]", [1.0, 2.0, 3.0, 4.0])
total = 0
for i in range(n):
    total += fxext.add_int(i, 1)  # SITE fxext.add_int
for i in range(n):
    fxext.spin_ns(1000)  # SITE fxext.spin_ns
for i in range(n):
    total += fxext.add3(1, 2, i)  # SITE fxext.add3
for i in range(n):
    total += fxext.sum_buffer(buf)  # SITE fxext.sum_buffer
for i in range(n):
    total += fxcffi.lib.fx_add_int(i, 2)  # SITE fxcffi.fx_add_int
for i in range(n):
    total += fxcffi.lib.fx_add3(1, 2, i)  # SITE fxcffi.fx_add3
for i in range(n):
    total += fxcffi.lib.fx_sum(cbuf, 4)  # SITE fxcffi.fx_sum
for i in range(n):
    total += fxcy.add_int(i, 3)  # SITE fxcy.add_int
for i in range(n):
    total += fxcy.add3(1, 2, i)  # SITE fxcy.add3
for i in range(n):
    total += acc.add(1)  # SITE fxcy.Acc.add
for i in range(n):
    total += fxpb.add_int(i, 4)  # SITE fxpb.add_int
for i in range(n):
    total += fxpb.sum_list([1.0, 2.0, 3.0])  # SITE fxpb.sum_list
for i in range(n):
    total += fxpb.add3(1, 2, i)  # SITE fxpb.add3
for i in range(n):
    total += counter.add(1)  # SITE fxpb.Counter.add
for i in range(n):
    total += fxpb.Counter.twice(i)  # SITE fxpb.Counter.twice


def helper():
    return fxext.add_then_call(None, 0)  # SITE fxext.add_then_call


def from_a():
    return helper()


def from_b():
    return helper()


# One site, reached through two stacks by turns: the sampled stacks of its repeats share its calls.
for i in range(n):
    total += from_a() if i % 2 else from_b()
fxpb.spin_ns(1000)
try:
    fxpb.checked_add(-5, 1)  # SITE fxpb.checked_add
except Exception as e:  # the C++ exception, as pybind11 translated it
    print("exception", type(e).__module__, type(e).__qualname__, str(e))
print("total", total)
