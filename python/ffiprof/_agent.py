"""The agent inside this interpreter: loaded once with ctypes, then driven one recording session
at a time through the attach session protocol (protocol/src/attach.rs): `ffiprof_attach_start`
gets the configuration (`key=value` lines naming a private session directory), installs the hooks
and starts recording before it returns; the agent reports in `status` and stops when `stop`
appears in the directory, restoring every hook and writing `profile.json` there.

Nothing here runs at import: `import ffiprof` (and the pytest plugin) load no library.
"""

import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import weakref

from . import _binary
from ._errors import ProfilerError, UnsupportedInterpreter

_load_lock = threading.Lock()
_start = None  # the agent's ffiprof_attach_start, once loaded
_agent_path = None

#: How often a stopping session's status is looked at, and for how long at most.
_POLL_S = 0.002
_STOP_TIMEOUT_S = 30.0
_AGENT_NAME = "libffiprof_agent.so"


def check_interpreter():
    """Raises UnsupportedInterpreter when the agent cannot record in this process."""
    impl = sys.implementation.name
    version = sys.version_info[:2]
    machine = platform.machine()
    if not sys.platform.startswith("linux") or machine not in ("x86_64", "AMD64"):
        raise UnsupportedInterpreter(
            "ffiprof records on Linux x86-64 only (this is %s %s)" % (sys.platform, machine)
        )
    if impl != "cpython":
        raise UnsupportedInterpreter(
            "ffiprof records in CPython only (this is %s); run the program under CPython 3.8-3.13" % impl
        )
    if not (3, 8) <= version <= (3, 13):
        raise UnsupportedInterpreter(
            "ffiprof's in-process API supports CPython 3.8-3.13, not %d.%d; run the program under one "
            "of those (or `ffiprof attach` it from outside on 3.14+, where the Python layer is off)" % version
        )


def _mapped_agents():
    """Paths of every copy of the agent mapped in this process (/proc/self/maps)."""
    found = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)
                path = fields[5].strip() if len(fields) > 5 else ""
                if path.endswith(_AGENT_NAME):
                    found.add(path)
    except OSError:
        pass
    return found


def _load():
    """Loads the agent the bundled binary unpacks (once per process; later calls reuse it)."""
    global _start, _agent_path
    with _load_lock:
        if _start is not None:
            return _start
        check_interpreter()
        path = _binary.run(["agent-path"]).strip()
        if not path or not os.path.isfile(path):
            raise ProfilerError("`ffiprof agent-path` named no agent library (%r)" % path)
        others = {p for p in _mapped_agents() if os.path.realpath(p) != os.path.realpath(path)}
        if others:
            raise ProfilerError(
                "another ffiprof agent is already loaded in this process (%s): the process runs under "
                "`ffiprof run` (its profile is written when it exits) or was attached by another "
                "ffiprof version; profile it in one way only" % ", ".join(sorted(others))
            )
        import ctypes

        # The agent's constructor starts a `run` session when FFIPROF_OUTPUT is set (a variable
        # left over from an `ffiprof run` parent): not what a program asking for a block wants.
        leftover = os.environ.pop("FFIPROF_OUTPUT", None)
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise ProfilerError("cannot load the ffiprof agent %s: %s" % (path, e))
        finally:
            if leftover is not None:
                os.environ["FFIPROF_OUTPUT"] = leftover
        start = lib.ffiprof_attach_start
        start.argtypes = [ctypes.c_char_p]
        start.restype = ctypes.c_int
        _start, _agent_path = start, path
        return start


def _read_status(directory):
    """(state, detail) of the session's status file, or (None, "") before the first write."""
    try:
        with open(os.path.join(directory, "status")) as f:
            text = f.read()
    except OSError:
        return None, ""
    head, _, detail = text.partition(" -- ")
    words = head.split()
    return (words[0] if words else None), detail.strip()


def _remove(directory, pid):
    if os.getpid() == pid:  # never from a forked child: the directory is the parent's
        shutil.rmtree(directory, True)


def remove_when_gone(owner, directory):
    """Removes `directory` once `owner` is garbage (or at exit), in this process only."""
    weakref.finalize(owner, _remove, directory, os.getpid())


class Segment:
    """One agent session: recording from start() until stop(); its profile stays on disk while
    any block that needs it holds this object."""

    def __init__(self, libs, interval):
        self.libs = tuple(libs)
        self.dir = tempfile.mkdtemp(prefix="ffiprof-")  # 0700, ours
        remove_when_gone(self, self.dir)
        self.profile = None
        self.python_layer = ""
        start = _load()
        config = "session=%s\ninterval=%s\ntiming=0\n" % (self.dir, interval)
        config += "".join("lib=%s\n" % lib for lib in self.libs)
        if start(config.encode()) != 0:
            state, detail = _read_status(self.dir)
            raise ProfilerError(
                "the ffiprof agent could not start recording: %s" % (detail or "no reason given (state %s)" % state)
            )
        _, self.python_layer = _read_status(self.dir)

    def stop(self):
        """Asks the agent to stop, waits until every hook is restored, and returns the profile."""
        with open(os.path.join(self.dir, "stop"), "w"):
            pass
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        state, detail = None, ""
        interrupted = None
        while time.monotonic() < deadline:
            try:
                state, detail = _read_status(self.dir)
                if state in ("detached", "error"):
                    break
                time.sleep(_POLL_S)  # releases the GIL: the agent takes it to restore the slots
            except KeyboardInterrupt as e:
                # Leaving now would leave the hooks in; the Ctrl-C is passed on once they are out.
                interrupted = e
        if interrupted is not None:
            raise interrupted
        if state == "error":
            raise ProfilerError("the ffiprof agent failed to stop: %s" % detail)
        if state != "detached":
            raise ProfilerError(
                "the ffiprof agent wrote its profile but did not finish restoring its hooks within "
                "%d s (a thread holds the GIL?)" % _STOP_TIMEOUT_S
            )
        # The agent writes no profile for a session in which nothing was called.
        profile = os.path.join(self.dir, "profile.json")
        self.profile = profile if detail and os.path.isfile(profile) else None
        return self.profile


class Controller:
    """Blocks that are recording now, and the agent session recording for them. One agent
    session runs at a time, so where blocks nest (or overlap, in threads) each boundary ends the
    current session and starts the next one: every block then owns the consecutive sessions that
    ran while it was open, merged when it ends. A session records the union of the open blocks'
    libraries; each block keeps its own when merged."""

    def __init__(self):
        self._lock = threading.RLock()
        self._open = []  # blocks recording now, outermost first
        self._segment = None
        self._forked = set()  # blocks a parent had open when this process was forked

    def _roll(self, opening=None, closing=None):
        """Ends the current session (its profile goes to every block open during it) and starts
        the next one for the blocks open after the change. A failure is raised after the list
        of open blocks is right again; a block that lost a session because of it says so when it
        ends."""
        failure = None
        if self._segment is not None:
            segment, self._segment = self._segment, None
            try:
                segment.stop()
            except ProfilerError as e:
                failure = e
                for block in self._open:
                    block._failures.append(str(e))
            else:
                for block in self._open:
                    block._segments.append(segment)
        if opening is not None:
            self._open.append(opening)
        if closing is not None:
            self._open.remove(closing)
        if self._open:
            try:
                self._segment = self._start()
            except ProfilerError as e:
                if opening is None:
                    raise
                # The new block cannot record; the ones open before it go on if they can.
                self._open.remove(opening)
                if self._open:
                    self._segment = self._start()
                raise e
        if failure is not None:
            raise failure

    def _start(self):
        libs = [b._libs for b in self._open]
        union = () if any(not l for l in libs) else tuple(sorted({p for l in libs for p in l}))
        return Segment(union, min(b._interval for b in self._open))

    def open(self, block):
        with self._lock:
            self._roll(opening=block)

    def close(self, block):
        with self._lock:
            if block in self._forked:
                self._forked.discard(block)
                raise ProfilerError(
                    "this block was opened before the process forked: the agent records in the "
                    "parent only, so nothing was recorded in this child"
                )
            self._roll(closing=block)

    def forget_after_fork(self):
        """In a forked child: the session and its blocks are the parent's (the agent's threads
        and its session directory stay with the parent), so ending them here must not touch them."""
        self._lock = threading.RLock()
        self._forked = set(self._open)
        self._open = []
        self._segment = None


controller = Controller()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=controller.forget_after_fork)
