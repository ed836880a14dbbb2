"""ffiprof: profile the boundary between Python and the native libraries it calls through ctypes
and cffi.

- `python -m ffiprof run -- python app.py` (or the `ffiprof` command) runs a program under it;
- `with ffiprof.profile() as p:` records the native calls of a block of this program;
- the pytest plugin (`pytest --ffiprof`, `@pytest.mark.ffi_budget(...)`) keeps a test's boundary
  on budget.
"""

from ._errors import ProfilerError, UnsupportedInterpreter
from ._profile import profile

try:
    from importlib import metadata as _metadata

    __version__ = _metadata.version("ffiprof")
except Exception:  # not installed as a distribution (a source checkout)
    __version__ = "0+unknown"

__all__ = ["profile", "ProfilerError", "UnsupportedInterpreter", "__version__"]
