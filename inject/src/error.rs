//! Every way an injection can fail, each with the remedy a user can act on.
//!
//! The messages are written for the person at the terminal: `ffiprof attach` prints them as they
//! are, so each says what was found and what to do about it.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// Why the kernel refused to let us ptrace the target, as far as we can tell from outside.
///
/// The kernel only says `EPERM`; the variants are our diagnosis from `/proc`, in the order the
/// kernel checks (an existing tracer, then user, then Yama), so the first remedy given is the one
/// that unblocks the next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtraceDenial {
    /// Another tracer (a debugger, strace, py-spy, another `ffiprof attach`) holds the process.
    AlreadyTraced { tracer_pid: i32 },
    /// The target belongs to another user and we lack CAP_SYS_PTRACE.
    OtherUser { target_uid: u32, our_uid: u32 },
    /// Yama's `ptrace_scope` forbids attaching to a non-descendant (1), needs CAP_SYS_PTRACE (2),
    /// or forbids ptrace entirely until reboot (3).
    Yama { scope: u8 },
    /// We run in a container whose capability bounding set lacks CAP_SYS_PTRACE (or whose seccomp
    /// profile blocks ptrace).
    Container,
    /// None of the above explains it (a seccomp filter, an LSM such as SELinux or AppArmor, or a
    /// non-dumpable target).
    Unexplained,
}

impl std::fmt::Display for PtraceDenial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PtraceDenial::AlreadyTraced { tracer_pid } => write!(
                f,
                "it is already being traced by PID {tracer_pid} (a debugger, strace, py-spy or another \
                 attach); detach that tool first"
            ),
            PtraceDenial::OtherUser { target_uid, our_uid } => write!(
                f,
                "it belongs to uid {target_uid} and you are uid {our_uid}; run ffiprof as that user \
                 (`sudo -u '#{target_uid}' ffiprof attach ...`) or as root"
            ),
            PtraceDenial::Yama { scope: 1 } => write!(
                f,
                "Yama's /proc/sys/kernel/yama/ptrace_scope is 1 (only a parent may trace its child); \
                 run ffiprof with sudo, or allow it until reboot with \
                 `echo 0 | sudo tee /proc/sys/kernel/yama/ptrace_scope`"
            ),
            PtraceDenial::Yama { scope: 2 } => write!(
                f,
                "Yama's /proc/sys/kernel/yama/ptrace_scope is 2 (only CAP_SYS_PTRACE may trace); run \
                 ffiprof with sudo, or grant it once with `sudo setcap cap_sys_ptrace+ep $(command -v ffiprof)`"
            ),
            PtraceDenial::Yama { scope } => write!(
                f,
                "Yama's /proc/sys/kernel/yama/ptrace_scope is {scope} (ptrace disabled until reboot); \
                 no attach is possible on this boot: start the program under `ffiprof run` instead"
            ),
            PtraceDenial::Container => write!(
                f,
                "this container lacks CAP_SYS_PTRACE; restart it with `--cap-add=SYS_PTRACE` (docker, \
                 podman) or `securityContext.capabilities.add: [\"SYS_PTRACE\"]` (Kubernetes), or use \
                 `ffiprof run` inside it"
            ),
            PtraceDenial::Unexplained => write!(
                f,
                "the kernel refused (EPERM) although user, capabilities and Yama allow it: a seccomp \
                 filter or a security module (SELinux, AppArmor) may forbid ptrace, or the target made \
                 itself non-dumpable; try as root, or use `ffiprof run`"
            ),
        }
    }
}

/// A failed injection. The target is left as it was in every case except
/// [`InjectError::Timeout`] while the injected call was still running (said in its message).
#[derive(Debug, Error)]
pub enum InjectError {
    #[error("no process with PID {pid}: check the number (`pgrep -a python`)")]
    NoSuchProcess { pid: i32 },

    #[error(
        "PID {pid} ({exe}) is not a Python process: no module it has loaded exports \
         Py_AddPendingCall and PyRun_SimpleString; attach to the python process itself, not a \
         shell or launcher around it (`pgrep -a python`)"
    )]
    NotPython { pid: i32, exe: String },

    #[error(
        "PID {pid} runs PyPy ({module}), which attach does not support: it needs CPython 3.8 or \
         later; start the program under `ffiprof run` instead, which records its ffi calls \
         (counts, bytes, native time; no call sites or marshal split on PyPy)"
    )]
    PyPy { pid: i32, module: String },

    #[error(
        "PID {pid} runs Python {version}, which attach does not support: it needs CPython 3.8 or \
         later (ptrace; remote exec from 3.14); start the program under `ffiprof run` instead"
    )]
    UnsupportedVersion { pid: i32, version: String },

    #[error("cannot determine the Python version of PID {pid} from {module}: {detail}")]
    UnknownVersion {
        pid: i32,
        module: String,
        detail: String,
    },

    #[error("not permitted to ptrace PID {pid}: {reason}")]
    PtraceDenied { pid: i32, reason: PtraceDenial },

    #[error(
        "the target (uid {uid}) cannot read {path}: {detail}; put the library where that user can \
         read it (e.g. `install -m 0755 -d /tmp/ffiprof && install -m 0644 {path} /tmp/ffiprof/`)"
    )]
    AgentNotReadable {
        path: PathBuf,
        uid: u32,
        detail: String,
    },

    #[error("PID {pid} is stopped (Ctrl-Z or SIGSTOP) and would not run the injected code; resume it with `kill -CONT {pid}` first")]
    TargetStopped { pid: i32 },

    #[error("PID {pid} exited {during}")]
    TargetExited { pid: i32, during: &'static str },

    #[error(
        "--method remote-exec needs Python 3.14 or later in the target (PEP 768), and PID {pid} \
         runs {version}: use --method ptrace (or auto)"
    )]
    RemoteExecTooOld { pid: i32, version: String },

    #[error("remote exec into PID {pid} failed: {detail}")]
    RemoteExecFailed { pid: i32, detail: String },

    #[error("timed out after {after:?} {what} in PID {pid}; {consequence}")]
    Timeout {
        pid: i32,
        what: &'static str,
        after: Duration,
        consequence: &'static str,
    },

    #[error("the injected code ran in PID {pid} but failed: {message}")]
    PayloadFailed { pid: i32, message: String },

    #[error(
        "Py_AddPendingCall refused in PID {pid} (returned {code}): the interpreter's queue of \
             pending calls is full or it is shutting down; retry in a moment"
    )]
    PendingCallRefused { pid: i32, code: i32 },

    #[error("injected {what} failed in PID {pid}: {detail}")]
    RemoteCall {
        pid: i32,
        what: &'static str,
        detail: String,
    },

    #[error("ptrace {op} on thread {tid} failed: {source}")]
    Ptrace {
        op: &'static str,
        tid: i32,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read the ELF symbols of {path}: {detail}")]
    Elf { path: PathBuf, detail: String },

    #[error("no safe place to resume PID {pid} from: {detail}")]
    NoSafeStop { pid: i32, detail: String },

    #[error("invalid injection options: {0}")]
    InvalidOptions(String),
}

impl InjectError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        InjectError::Io {
            path: path.into(),
            source,
        }
    }
}
