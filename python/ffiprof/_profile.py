"""`ffiprof.profile`: record the native calls made inside a block (or a decorated function) of
the running program, without restarting it and without ptrace."""

import functools
import json
import os
import shutil
import tempfile
import threading

from . import _agent, _binary
from ._errors import ProfilerError

try:  # 3.8 has no os.PathLike subscripting, but the class exists
    _PathLike = os.PathLike
except AttributeError:  # pragma: no cover
    _PathLike = ()


def _patterns(lib):
    if lib is None:
        return ()
    if isinstance(lib, (str, _PathLike)):
        lib = [lib]
    try:
        items = [os.fspath(x) if isinstance(x, _PathLike) else x for x in lib]
    except TypeError:
        raise TypeError("lib must be a library pattern (str) or a list of them, not %r" % (lib,))
    for item in items:
        if not isinstance(item, str):
            raise TypeError("lib must be a library pattern (str) or a list of them, not %r" % (item,))
        if not item or "\n" in item:
            raise ValueError("lib patterns must be non-empty single lines, got %r" % (item,))
    return tuple(items)


class profile:
    """Records the calls this process makes through ctypes and cffi while the block runs::

        with ffiprof.profile(lib="libm") as p:
            work()
        print(p.function("cos")["calls"])

    or, as a decorator, every call of the function (`f.ffiprof` is the profile of the last)::

        @ffiprof.profile(output="f.json")
        def f(): ...

    The agent is loaded into this interpreter on first use (no restart, no ptrace) and stays
    loaded; calls before and after the block are not recorded, calls of every thread during it
    are. `output` writes the profile there when the block ends (read it with `ffiprof report`);
    `lib` records only libraries whose path contains the pattern or matches it as a glob, as
    `ffiprof run --lib`. Blocks may repeat and nest.
    """

    def __init__(self, output=None, lib=None, interval=1.0):
        if output is not None and not isinstance(output, (str, _PathLike)):
            raise TypeError("output must be a path (str or os.PathLike) or None, not %r" % (output,))
        self._output = os.fspath(output) if output is not None else None
        self._libs = _patterns(lib)
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
            raise ValueError("interval must be a positive number of seconds, not %r" % (interval,))
        self._interval = float(interval)
        self._depth = 0
        self._depth_lock = threading.Lock()
        self._segments = []
        self._failures = []
        self._path = None
        self._report = None
        self._dir = None

    # -- recording ---------------------------------------------------------------------------

    def __enter__(self):
        with self._depth_lock:
            self._depth += 1
            if self._depth > 1:
                return self  # re-entered (recursion of a decorated function): already recording
            self._segments, self._failures = [], []
            self._path = self._report = None
        try:
            _agent.controller.open(self)
        except BaseException:
            with self._depth_lock:
                self._depth -= 1
            raise
        return self

    def __exit__(self, *exc):
        with self._depth_lock:
            self._depth -= 1
            if self._depth > 0:
                return False
        try:
            _agent.controller.close(self)
        finally:
            segments, self._segments = self._segments, []
        if self._failures:
            raise ProfilerError("; ".join(self._failures))
        self._finish(segments)
        return False

    def __call__(self, func):
        if not callable(func):
            raise TypeError("ffiprof.profile(...) decorates a function, not %r" % (func,))

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with self:
                return func(*args, **kwargs)

        wrapper.ffiprof = self
        return wrapper

    def _finish(self, segments):
        self._dir = tempfile.mkdtemp(prefix="ffiprof-block-")
        _agent.remove_when_gone(self, self._dir)
        path = os.path.join(self._dir, "profile.json")
        recorded = [s for s in segments if s.profile is not None]
        if len(recorded) == 1 and recorded[0].libs == self._libs:
            shutil.copyfile(recorded[0].profile, path)
        else:  # several windows, another library filter, or nothing called (an empty profile)
            args = ["merge", "--consecutive", "-o", path] + [s.profile for s in recorded]
            for lib in self._libs:
                args += ["--lib", lib]
            _binary.run(args)
        self._path = path
        if self._output is not None:
            self.save(self._output)

    # -- results -----------------------------------------------------------------------------

    def _ready(self):
        if self._path is None:
            raise ProfilerError(
                "no profile yet: the results are there once the `with ffiprof.profile()` block "
                "(or the decorated function) has ended"
            )
        return self._path

    @property
    def path(self):
        """The profile file (ffiprof's own format; `ffiprof report PATH` reads it)."""
        return self._ready()

    @property
    def report(self):
        """The whole JSON contract of `ffiprof report --format json` (meta, functions, ...)."""
        if self._report is None:
            self._report = json.loads(_binary.run(["report", self._ready(), "--format", "json"]))
        return self._report

    @property
    def functions(self):
        """The C functions called in the block: the JSON contract's function objects (calls,
        bytes, native/marshal times, sites), by total boundary time."""
        return self.report["functions"]

    @property
    def recommendations(self):
        """What to change, best first: the JSON contract's recommendation objects."""
        return self.report["recommendations"]

    def function(self, name, library=None):
        """The function object of the C function `name` (in `library`, matched as a substring,
        when given); KeyError naming what was recorded when there is none."""
        for f in self.functions:
            if f["function"] == name and (library is None or library in f["library"]):
                return f
        raise KeyError(
            "%s was not called in the block (recorded: %s)"
            % (name, ", ".join(f["function"] for f in self.functions) or "no native call")
        )

    def text(self, top=None):
        """The terminal summary `ffiprof report` prints: functions, split, sites, advice."""
        args = ["report", self._ready()]
        if top is not None:
            args += ["--top", int(top)]
        return _binary.run(args)

    def save(self, path):
        """Writes the profile to `path` (atomically); returns the path."""
        path = os.fspath(path)
        tmp = "%s.%d.tmp" % (path, os.getpid())
        shutil.copyfile(self._ready(), tmp)
        os.replace(tmp, path)
        return path

    def html(self, path):
        """Writes the self-contained HTML report (flamegraph, tables, advice) to `path`."""
        path = os.fspath(path)
        _binary.run(["report", self._ready(), "--html", path])
        return path

    def __repr__(self):
        if self._path is None:
            return "<ffiprof.profile %s>" % ("recording" if self._depth else "not run yet")
        return "<ffiprof.profile %d calls in %d functions>" % (
            sum(f["calls"] for f in self.functions),
            len(self.functions),
        )
