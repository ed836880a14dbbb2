"""The pytest plugin (entry point `pytest11`): keeps a test's native boundary on budget.

- `@pytest.mark.ffi_budget(function="glob", max_calls=N, max_boundary_ms=X, max_marshal_share=F)`
  records the test's call (not its fixtures) and fails it when a C function matching the glob
  goes over a budget: the message names the function, the figure, the budget and the call site
  that contributed most.
- `pytest --ffiprof` records every test and prints, at the end, each test's boundary summary.

A test with no marker, in a run without `--ffiprof`, pays nothing: no hook wraps it, the agent is
not loaded for it, and nothing in this module is imported beyond the standard library.
"""

import fnmatch
import os

import pytest

_MARKER = "ffi_budget"
_BUDGETS = ("max_calls", "max_boundary_ms", "max_marshal_share")
_KEY = "_ffiprof_summaries"


def pytest_addoption(parser):
    group = parser.getgroup("ffiprof", "native boundary profiling (ffiprof)")
    group.addoption(
        "--ffiprof",
        action="store_true",
        default=False,
        help="record every test's calls into native libraries (ctypes, cffi) and print each "
        "test's boundary summary at the end",
    )
    group.addoption(
        "--ffiprof-lib",
        action="append",
        default=[],
        metavar="PATTERN",
        help="with --ffiprof or ffi_budget: record only libraries matching PATTERN (repeatable)",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "ffi_budget(function='*', max_calls=None, max_boundary_ms=None, max_marshal_share=None, "
        "lib=None): fail the test when a C function matching the glob goes over a budget of "
        "calls, boundary time (ms) or marshaling share of its boundary time (0-1)",
    )
    setattr(config, _KEY, [])


class _Budget:
    def __init__(self, mark):
        args, kwargs = list(mark.args), dict(mark.kwargs)
        if len(args) > 1:
            raise pytest.UsageError("ffi_budget takes at most one positional argument (function=...)")
        self.glob = args[0] if args else kwargs.pop("function", "*")
        self.lib = kwargs.pop("lib", None)
        unknown = sorted(set(kwargs) - set(_BUDGETS))
        if unknown:
            raise pytest.UsageError(
                "ffi_budget: unknown argument(s) %s; it takes function=, lib= and %s"
                % (", ".join(unknown), ", ".join(b + "=" for b in _BUDGETS))
            )
        if not isinstance(self.glob, str) or not self.glob:
            raise pytest.UsageError("ffi_budget: function must be a glob string, got %r" % (self.glob,))
        self.limits = {}
        for name in _BUDGETS:
            value = kwargs.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise pytest.UsageError("ffi_budget: %s must be a non-negative number, got %r" % (name, value))
            if name == "max_marshal_share" and value > 1:
                raise pytest.UsageError("ffi_budget: max_marshal_share is a fraction (0-1), got %r" % (value,))
            self.limits[name] = value
        if not self.limits:
            raise pytest.UsageError(
                "ffi_budget(%r) sets no budget: give max_calls=, max_boundary_ms= or max_marshal_share=" % self.glob
            )


def _marshal_ns(f):
    return f["marshal_in_ns"] + f["marshal_out_ns"] + f.get("construction_ns", 0)


def _figure(name, f):
    """The function's (or site's) figure a budget bounds."""
    if name == "max_calls":
        return f["calls"]
    if name == "max_boundary_ms":
        return f["total_ns"] / 1e6
    total = f["total_ns"]
    return _marshal_ns(f) / total if total else 0.0


def _site_total(s):
    return s["native_ns"] + s["marshal_in_ns"] + s["marshal_out_ns"] + s["gil_wait_ns"] + s.get("construction_ns", 0)


def _calls(n):
    return "%d call%s" % (n, "" if n == 1 else "s")


def _where(path, root):
    """`path` relative to the run's root directory when it lies inside it."""
    try:
        rel = os.path.relpath(path, root)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _top_site(name, f, root):
    sites = f.get("sites") or []
    if not sites:
        return "no call site recorded (the Python layer was off)"
    key = {
        "max_calls": lambda s: s["calls"],
        "max_boundary_ms": _site_total,
        "max_marshal_share": lambda s: s["marshal_in_ns"] + s["marshal_out_ns"] + s.get("construction_ns", 0),
    }[name]
    s = max(sites, key=key)
    return "%s:%s in %s (%s, %.3f ms at the boundary)" % (
        _where(s["file"], root),
        s["line"],
        s["function"],
        _calls(s["calls"]),
        _site_total(s) / 1e6,
    )


def _describe(name, value, limit):
    if name == "max_calls":
        return "%s, budget max_calls=%s" % (_calls(value), limit)
    if name == "max_boundary_ms":
        return "%.3f ms at the boundary, budget max_boundary_ms=%s" % (value, limit)
    return "marshal share %.2f of its boundary time, budget max_marshal_share=%s" % (value, limit)


def _violations(budget, functions, root):
    out = []
    for f in functions:
        if not fnmatch.fnmatchcase(f["function"], budget.glob):
            continue
        for name, limit in budget.limits.items():
            value = _figure(name, f)
            if value > limit:
                out.append(
                    "ffi_budget exceeded: %s (%s): %s; top call site: %s"
                    % (f["function"], f["library"], _describe(name, value, limit), _top_site(name, f, root))
                )
    return out


def _summary(nodeid, functions):
    calls = sum(f["calls"] for f in functions)
    total_ms = sum(f["total_ns"] for f in functions) / 1e6
    if functions:
        top = max(functions, key=lambda f: f["total_ns"])
        top_text = "top %s (%s, %.3f ms)" % (top["function"], _calls(top["calls"]), top["total_ns"] / 1e6)
    else:
        top_text = "no native call"
    return "%s: %s, %.3f ms at the boundary, %s" % (nodeid, _calls(calls), total_ms, top_text)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    marks = list(item.iter_markers(name=_MARKER))
    everything = item.config.getoption("ffiprof")
    if not marks and not everything:
        return  # no marker, no --ffiprof: nothing is wrapped, nothing loaded
    budgets = [_Budget(m) for m in marks]
    libs = list(item.config.getoption("ffiprof_lib"))
    for b in budgets:
        if b.lib is not None:
            libs += [b.lib] if isinstance(b.lib, str) else list(b.lib)
    original = item.runtest

    def runtest():
        from ._profile import profile

        p = profile(lib=libs or None)
        try:
            with p:
                original()
        finally:
            del item.runtest  # back to the class's own method
            if everything and p._path is not None:
                getattr(item.config, _KEY).append(_summary(item.nodeid, p.functions))
        root = str(getattr(item.config, "rootpath", None) or item.config.rootdir)
        problems = [v for b in budgets for v in _violations(b, p.functions, root)]
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)

    item.runtest = runtest


def pytest_terminal_summary(terminalreporter, config):
    lines = getattr(config, _KEY, None)
    if not config.getoption("ffiprof") or lines is None:
        return
    terminalreporter.write_sep("=", "ffiprof: native boundary per test")
    for line in lines or ["no test was recorded"]:
        terminalreporter.write_line(line)
