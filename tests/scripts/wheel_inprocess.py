"""The in-process API of the installed package (ffiprof.profile), checked from inside: exact
counts inside blocks only, nesting, threads, the decorator, a second profile reusing the loaded
agent, results (text, save, html, output=) and clear errors. Usage: wheel_inprocess.py FIXTURE_LIB
OUTDIR (prints `ok` and the checks it made)."""
import ctypes
import os
import platform
import subprocess
import sys
import threading
import types

import ffiprof
from ffiprof import _agent

fixture, outdir = sys.argv[1], sys.argv[2]
lib = ctypes.CDLL(fixture)
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
lib.fx_add_int.restype = ctypes.c_int
lib.fx_scale.argtypes = [ctypes.c_double]
lib.fx_scale.restype = ctypes.c_double
libc = ctypes.CDLL("libc.so.6")


def agents_mapped():
    return sorted({l.split()[-1] for l in open("/proc/self/maps") if l.rstrip().endswith("libffiprof_agent.so")})


def calls(p, name):
    return p.function(name)["calls"]


# Unsupported platforms and interpreters raise before anything is loaded.
real_machine = platform.machine
platform.machine = lambda: "aarch64"
try:
    with ffiprof.profile():
        raise AssertionError("recorded on aarch64?")
except ffiprof.UnsupportedInterpreter as e:
    assert "Linux x86-64" in str(e), e
finally:
    platform.machine = real_machine
real_sys = _agent.sys
_agent.sys = types.SimpleNamespace(
    platform="linux", implementation=types.SimpleNamespace(name="cpython"), version_info=(3, 14, 0)
)
try:
    with ffiprof.profile():
        raise AssertionError("recorded on 3.14?")
except ffiprof.UnsupportedInterpreter as e:
    assert "3.8-3.13, not 3.14" in str(e), e
finally:
    _agent.sys = real_sys
assert agents_mapped() == [], agents_mapped()

# Bad arguments.
for kwargs, exc, text in [
    ({"lib": 5}, TypeError, "lib must be"),
    ({"lib": ["libm", 3]}, TypeError, "lib must be"),
    ({"lib": ""}, ValueError, "non-empty"),
    ({"output": 3}, TypeError, "output must be a path"),
    ({"interval": 0}, ValueError, "interval"),
]:
    try:
        ffiprof.profile(**kwargs)
        raise AssertionError("accepted %r" % kwargs)
    except exc as e:
        assert text in str(e), (kwargs, e)
try:
    ffiprof.profile().functions
    raise AssertionError("results before the block")
except ffiprof.ProfilerError as e:
    assert "once the `with ffiprof.profile()` block" in str(e), e
print("errors ok")

# Calls before and after the block are not counted; the site is the line in the block.
for i in range(5):
    lib.fx_add_int(i, 1)
with ffiprof.profile() as p:
    for i in range(1000):
        lib.fx_add_int(i, 1)  # SITE-ADD
    for i in range(7):
        lib.fx_scale(float(i))
for i in range(3):
    lib.fx_add_int(i, 1)
assert calls(p, "fx_add_int") == 1000, p.functions
assert calls(p, "fx_scale") == 7
assert sorted(f["function"] for f in p.functions) == ["fx_add_int", "fx_scale"], p.functions
site_line = next(n for n, l in enumerate(open(__file__), 1) if "# SITE-ADD" in l and "lib.fx" in l)
sites = p.function("fx_add_int")["sites"]
assert [(os.path.basename(s["file"]), s["line"], s["calls"]) for s in sites] == [
    ("wheel_inprocess.py", site_line, 1000)
], sites
assert isinstance(p.recommendations, list)
first_agent = agents_mapped()
assert len(first_agent) == 1, first_agent
try:
    p.function("fx_sum")
    raise AssertionError("fx_sum was not called")
except KeyError as e:
    assert "fx_add_int" in str(e)
print("block ok", calls(p, "fx_add_int"))

# Results: text, save, html, output=.
text = p.text()
assert "fx_add_int" in text and "1000" in text, text
saved = p.save(os.path.join(outdir, "saved.json"))
html = p.html(os.path.join(outdir, "block.html"))
assert open(html).read(15).lower().startswith("<!doctype html"), html
out_path = os.path.join(outdir, "output.json")
with ffiprof.profile(output=out_path, lib="libc.so*") as q:
    for i in range(11):
        libc.labs(-i)
    lib.fx_add_int(1, 2)  # not in the lib filter
assert [(f["function"], f["calls"]) for f in q.functions] == [("labs", 11)], q.functions
for path, fn, n in [(saved, "fx_add_int", 1000), (out_path, "labs", 11)]:
    report = subprocess.run(
        [sys.executable, "-m", "ffiprof", "report", path, "--format", "json"],
        stdout=subprocess.PIPE, check=True, universal_newlines=True,
    ).stdout
    import json

    assert {f["function"]: f["calls"] for f in json.loads(report)["functions"]}[fn] == n, report
print("results ok")

# A second profile reuses the loaded agent.
with ffiprof.profile() as p2:
    for i in range(42):
        lib.fx_add_int(i, 1)
assert calls(p2, "fx_add_int") == 42
assert agents_mapped() == first_agent, agents_mapped()
print("reuse ok")

# Threads started inside the block are counted.
def work(n):
    f = lib.fx_add_int
    for i in range(n):
        f(i, 1)


with ffiprof.profile() as pt:
    ts = [threading.Thread(target=work, args=(300,)) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
assert calls(pt, "fx_add_int") == 900, pt.functions
assert pt.report["meta"]["threads"] >= 1
print("threads ok")

# Nested blocks: each counts exactly what ran while it was open; an inner lib filter narrows
# only the inner block.
with ffiprof.profile() as outer:
    for i in range(10):
        lib.fx_add_int(i, 1)
    with ffiprof.profile() as inner:
        for i in range(20):
            lib.fx_add_int(i, 1)
        with ffiprof.profile(lib="libc.so*") as innermost:
            for i in range(4):
                libc.labs(-i)
            for i in range(6):
                lib.fx_add_int(i, 1)
    for i in range(30):
        lib.fx_add_int(i, 1)
    for i in range(2):
        lib.fx_scale(1.0)
assert calls(outer, "fx_add_int") == 66 and calls(outer, "labs") == 4 and calls(outer, "fx_scale") == 2
assert calls(inner, "fx_add_int") == 26 and calls(inner, "labs") == 4
assert [(f["function"], f["calls"]) for f in innermost.functions] == [("labs", 4)], innermost.functions
print("nested ok", calls(outer, "fx_add_int"), calls(inner, "fx_add_int"))

# A child forked inside a block records nothing and ending the block there says so, leaving the
# parent's recording (its session directory included) alone.
with ffiprof.profile() as pf:
    libc.labs(-1)
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            pf.__exit__(None, None, None)
        except ffiprof.ProfilerError as e:
            code = 0 if "before the process forked" in str(e) else 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    libc.labs(-2)
assert calls(pf, "labs") == 2, pf.functions
print("fork ok")

# A block that calls nothing has an empty profile.
with ffiprof.profile() as empty:
    pass
assert empty.functions == [] and empty.report["meta"]["total_calls"] == 0, empty.report
print("empty ok")

# The decorator: each call of the function is one recording.
@ffiprof.profile()
def step(n):
    for i in range(n):
        lib.fx_scale(float(i))
    return n


assert step(50) == 50
assert calls(step.ffiprof, "fx_scale") == 50
step(8)
assert calls(step.ffiprof, "fx_scale") == 8
print("decorator ok")
print("ok")
