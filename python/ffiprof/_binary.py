"""The `ffiprof` binary this package was installed with.

The wheel installs it as a script (maturin's "bin" bindings): into the environment's `bin/`,
or the user scheme's, or wherever pip put scripts. The installed distribution's RECORD says
exactly where, so that is looked at first; `FFIPROF_BIN` overrides everything.
"""

import os
import shutil
import subprocess
import sys
import sysconfig

from ._errors import ProfilerError

_found = None


def _executable(path):
    return path if path and os.path.isfile(path) and os.access(path, os.X_OK) else None


def _from_record():
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - 3.8+ always has it
        return None
    try:
        dist = metadata.distribution("ffiprof")
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == "ffiprof" and f.parent.name in ("bin", "scripts", "Scripts"):
            found = _executable(str(f.locate()))
            if found:
                return os.path.realpath(found)
    return None


def _from_schemes():
    here = os.path.realpath(os.path.dirname(os.path.dirname(__file__)))
    schemes = [None] + [s for s in ("posix_user", "posix_prefix") if s in sysconfig.get_scheme_names()]
    for scheme in schemes:
        paths = sysconfig.get_paths(scheme) if scheme else sysconfig.get_paths()
        libs = {os.path.realpath(paths.get(k, "")) for k in ("purelib", "platlib")}
        if here in libs:
            found = _executable(os.path.join(paths["scripts"], "ffiprof"))
            if found:
                return found
    return None


def binary():
    """The path of the `ffiprof` binary; raises ProfilerError with the remedy when it is missing."""
    global _found
    if _found:
        return _found
    override = os.environ.get("FFIPROF_BIN")
    if override:
        if not _executable(override):
            raise ProfilerError(
                "FFIPROF_BIN=%s is not an executable file; unset it to use the installed ffiprof" % override
            )
        _found = override
        return _found
    _found = _from_record() or _from_schemes() or shutil.which("ffiprof")
    if not _found:
        raise ProfilerError(
            "the ffiprof binary that comes with this package was not found (looked in the "
            "installed files of the ffiprof distribution, %s and PATH); reinstall it: "
            "pip install --force-reinstall ffiprof-*.whl, or set FFIPROF_BIN" % sysconfig.get_paths()["scripts"]
        )
    return _found


def run(args, check=True):
    """Runs `ffiprof ARGS...`, returning its stdout (text); a failure raises ProfilerError with
    what the binary said."""
    proc = subprocess.run(
        [binary()] + [str(a) for a in args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
    )
    if check and proc.returncode != 0:
        raise ProfilerError(
            "ffiprof %s failed (exit status %d): %s"
            % (" ".join(str(a) for a in args[:1]), proc.returncode, proc.stderr.strip())
        )
    return proc.stdout


def main(argv=None):
    """`python -m ffiprof ARGS...`: the binary, in place of this interpreter (same pid, exit
    status and signals as running `ffiprof` itself)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        path = binary()
    except ProfilerError as e:
        sys.stderr.write("ffiprof: %s\n" % e)
        return 1
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(path, ["ffiprof"] + list(argv))
    return 1  # pragma: no cover - execv does not return
