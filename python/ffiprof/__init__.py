"""ffiprof: profile the boundary between Python and the native libraries it calls through ctypes
and cffi.

- `python -m ffiprof run -- python app.py` (or the `ffiprof` command) runs a program under it;
- `with ffiprof.profile() as p:` records the native calls of a block of this program;
- the pytest plugin (`pytest --ffiprof`, `@pytest.mark.ffi_budget(...)`) keeps a test's boundary
  on budget.

Importing the package loads nothing else: the pytest plugin is registered in every pytest run
of an environment that has ffiprof, so `profile` and the agent's driver are imported on first
use only.
"""

from ._errors import ProfilerError, UnsupportedInterpreter

__all__ = ["profile", "ProfilerError", "UnsupportedInterpreter", "__version__"]


def __getattr__(name):
    if name == "profile":
        from ._profile import profile

        globals()["profile"] = profile
        return profile
    if name == "__version__":
        try:
            from importlib import metadata

            version = metadata.version("ffiprof")
        except Exception:  # not installed as a distribution (a source checkout)
            version = "0+unknown"
        globals()["__version__"] = version
        return version
    raise AttributeError("module 'ffiprof' has no attribute %r" % name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
