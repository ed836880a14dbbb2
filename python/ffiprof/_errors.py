"""The exceptions the package raises."""


class ProfilerError(RuntimeError):
    """ffiprof could not record or read a profile; the message says why and what to do."""


class UnsupportedInterpreter(ProfilerError):
    """This interpreter or platform is one the in-process agent cannot record in."""
