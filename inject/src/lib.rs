//! Getting code into an already-running CPython process, and leaving it as it was.
//!
//! With ptrace (CPython 3.8–3.13, and later): one thread is stopped, preferably one blocked in a
//! system call; it is made to execute only lock-free work — an `mmap` system call for a private
//! page, then `Py_AddPendingCall(PyRun_SimpleString, page)` — and is put back exactly as it was.
//! The interpreter later runs the page's source on its main thread at a safe point, holding the
//! GIL, where no malloc or loader lock is held; only that source loads libraries. With PEP 768
//! (3.14+), the interpreter's own `sys.remote_exec` delivers the same source. ARCHITECTURE.md,
//! "Attach: how the agent gets in", says why.
//!
//! ```no_run
//! use ffiprof_inject::{inject, InjectOptions, Payload};
//! let opts = InjectOptions::new(Payload::Python("open('/tmp/hello', 'w').close()".into()));
//! let report = inject(1234, &opts)?;
//! println!("ran after {:?}", report.outcome.unwrap().ran_after);
//! # Ok::<(), ffiprof_inject::InjectError>(())
//! ```

mod elf;
mod error;
pub mod launch;
mod procfs;
mod ptrace;
mod remote_exec;
mod snippet;

use std::time::{Duration, Instant};

pub use elf::PythonModule;
pub use error::{InjectError, PtraceDenial};
pub use ffiprof_protocol::attach::{AgentStatus, AttachConfig};
pub use snippet::{Outcome, Payload, StatusChannel as SessionDir};

use procfs::Mapping;
use ptrace::{Tracee, Trap};
use snippet::StatusChannel;

/// How to get in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// PEP 768 where the target's Python has it (3.14+), ptrace otherwise.
    #[default]
    Auto,
    Ptrace,
    RemoteExec,
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Method::Auto),
            "ptrace" => Ok(Method::Ptrace),
            "remote-exec" => Ok(Method::RemoteExec),
            other => Err(format!(
                "unknown method {other:?}: expected auto, ptrace or remote-exec"
            )),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Auto => "auto",
            Method::Ptrace => "ptrace",
            Method::RemoteExec => "remote-exec",
        })
    }
}

#[derive(Debug, Clone)]
pub struct InjectOptions {
    pub payload: Payload,
    pub method: Method,
    /// Bound on each ptrace step (stopping a thread, each injected call). The target thread is
    /// held for well under a millisecond normally.
    pub step_timeout: Duration,
    /// How long [`inject`] waits for the main thread to run the code once it is queued.
    pub wait: Duration,
}

impl InjectOptions {
    pub fn new(payload: Payload) -> Self {
        InjectOptions {
            payload,
            method: Method::Auto,
            step_timeout: Duration::from_secs(2),
            wait: Duration::from_secs(30),
        }
    }
}

/// What was done, for the user and for tests.
#[derive(Debug, Clone)]
pub struct InjectReport {
    pub pid: i32,
    /// The method actually used (never `Auto`).
    pub method: Method,
    pub python_version: String,
    pub python_module: String,
    /// The thread that queued the call (ptrace only).
    pub thread: Option<i32>,
    /// Whether that thread was stopped inside a system call (the preferred case).
    pub thread_was_in_syscall: bool,
    /// The page holding the source (ptrace only); the source unmaps it when it runs.
    pub page: Option<u64>,
    /// Attempts at stopping a thread at a safe spot.
    pub attempts: u32,
    /// From the start of [`schedule`] until the code was queued.
    pub scheduled_after: Duration,
    /// Filled by [`Scheduled::wait`].
    pub outcome: Option<Outcome>,
}

/// Code queued in the target, not yet known to have run.
pub struct Scheduled {
    report: InjectReport,
    channel: StatusChannel,
    queued_at: Instant,
}

impl Scheduled {
    pub fn report(&self) -> &InjectReport {
        &self.report
    }

    /// Waits for the injected code to run and report. A timeout leaves it queued: it runs when
    /// the main thread next executes Python.
    pub fn wait(self, timeout: Duration) -> Result<InjectReport, InjectError> {
        let outcome = self
            .channel
            .wait(self.report.pid, self.queued_at, timeout)?;
        Ok(InjectReport {
            outcome: Some(outcome),
            ..self.report
        })
    }
}

/// A private directory (0700) owned by `pid`'s user, where an attach session's agent reports and
/// writes its profile; removed when dropped.
pub fn session_dir(pid: i32) -> Result<SessionDir, InjectError> {
    let status = procfs::process_status(pid)?;
    SessionDir::create(pid, &status)
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_interrupt(_sig: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Release);
}

/// From now on Ctrl-C (SIGINT) and SIGTERM only set a flag, so an attach can stop early and
/// still detach cleanly and write the profile. Returns the flag.
pub fn catch_interrupts() -> &'static std::sync::atomic::AtomicBool {
    // SAFETY: installs a handler that only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            note_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            note_interrupt as *const () as libc::sighandler_t,
        );
    }
    &INTERRUPTED
}

/// Queues the payload in `pid` and waits for it to run (see [`schedule`] for the first half).
pub fn inject(pid: i32, opts: &InjectOptions) -> Result<InjectReport, InjectError> {
    schedule(pid, opts)?.wait(opts.wait)
}

/// Queues the payload in `pid` and returns as soon as the interpreter has it.
pub fn schedule(pid: i32, opts: &InjectOptions) -> Result<Scheduled, InjectError> {
    let started = Instant::now();
    if pid <= 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(InjectError::NoSuchProcess { pid });
    }
    let status = procfs::process_status(pid)?;
    match status.state {
        'Z' | 'X' => {
            return Err(InjectError::TargetExited {
                pid,
                during: "before we started (it is a zombie)",
            })
        }
        'T' => return Err(InjectError::TargetStopped { pid }),
        _ => {}
    }
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let maps = match procfs::read_maps(pid) {
        Err(InjectError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            return Err(InjectError::PtraceDenied {
                pid,
                reason: procfs::diagnose_denial(&procfs::gather_facts(pid)?),
            });
        }
        other => other?,
    };
    let python = elf::find_python(pid, &maps, &exe)?;
    if python.version < (3, 8) {
        return Err(InjectError::UnsupportedVersion {
            pid,
            version: python.version_string(),
        });
    }
    let method = match opts.method {
        Method::Auto if python.version >= remote_exec::MIN_VERSION => Method::RemoteExec,
        Method::Auto => Method::Ptrace,
        m => m,
    };
    if method == Method::RemoteExec && python.version < remote_exec::MIN_VERSION {
        return Err(InjectError::RemoteExecTooOld {
            pid,
            version: python.version_string(),
        });
    }
    if let Payload::Library { path, .. } = &opts.payload {
        if !path.is_absolute() {
            return Err(InjectError::InvalidOptions(format!(
                "the library path {} must be absolute",
                path.display()
            )));
        }
        procfs::check_readable_by(path, &status).map_err(|detail| {
            InjectError::AgentNotReadable {
                path: path.clone(),
                uid: status.uid[3],
                detail,
            }
        })?;
    }
    let channel = StatusChannel::create(pid, &status)?;
    let mut report = InjectReport {
        pid,
        method,
        python_version: python.version_string(),
        python_module: python.path.clone(),
        thread: None,
        thread_was_in_syscall: false,
        page: None,
        attempts: 0,
        scheduled_after: Duration::ZERO,
        outcome: None,
    };
    match method {
        Method::RemoteExec => {
            let source = snippet::wrap(&opts.payload, channel.target_path(), None);
            remote_exec::schedule(pid, &python, &exe, &status, &source, &channel)?;
        }
        _ => schedule_ptrace(
            pid,
            &python,
            &maps,
            &opts.payload,
            &channel,
            opts.step_timeout,
            &mut report,
        )?,
    }
    report.scheduled_after = started.elapsed();
    Ok(Scheduled {
        report,
        channel,
        queued_at: Instant::now(),
    })
}

const SIGSEGV_BIT: u64 = 1 << (libc::SIGSEGV - 1);
const SIGTRAP_BIT: u64 = 1 << (libc::SIGTRAP - 1);
const MAX_ATTEMPTS: u32 = 50;

fn schedule_ptrace(
    pid: i32,
    python: &PythonModule,
    maps: &[Mapping],
    payload: &snippet::Payload,
    channel: &StatusChannel,
    step: Duration,
    report: &mut InjectReport,
) -> Result<(), InjectError> {
    // Threads blocked in a system call first: stopped there, a thread holds no user-space lock
    // in the middle of a critical section, and its call restarts transparently afterwards.
    let mut threads = procfs::threads(pid)?;
    threads.sort_by_key(|&(tid, state)| (state != 'S', tid != pid));
    let threads: Vec<i32> = threads
        .into_iter()
        .filter(|&(_, s)| s != 'Z' && s != 'X')
        .map(|(t, _)| t)
        .collect();
    if threads.is_empty() {
        return Err(InjectError::TargetExited {
            pid,
            during: "before we started",
        });
    }
    let mut last_refusal = String::new();
    for attempt in 0..MAX_ATTEMPTS {
        report.attempts = attempt + 1;
        let tid = threads[attempt as usize % threads.len()];
        let mut tracee = match Tracee::seize(pid, tid, step) {
            Ok(t) => t,
            Err(InjectError::Ptrace { source, .. })
                if source.raw_os_error() == Some(libc::EPERM) =>
            {
                return Err(InjectError::PtraceDenied {
                    pid,
                    reason: procfs::diagnose_denial(&procfs::gather_facts(pid)?),
                });
            }
            // The thread ended between listing and seizing: try another.
            Err(InjectError::TargetExited { .. }) if !procfs::is_gone(pid) => continue,
            Err(e) => return Err(e),
        };
        let regs = *tracee.original_regs();
        if python
            .pending_lock_ranges
            .iter()
            .any(|&(start, end)| regs.rip >= start && regs.rip < end)
        {
            last_refusal = format!(
                "thread {tid} was inside the pending-call lock at {:#x}",
                regs.rip
            );
            tracee.detach()?;
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let Some(trap) = choose_trap(pid, tid, maps, &tracee)? else {
            last_refusal = format!("thread {tid} blocks or ignores both SIGSEGV and SIGTRAP");
            tracee.detach()?;
            continue;
        };
        let gadget = find_bytes(&tracee, maps, &[0x0f, 0x05, 0xc3], |p| {
            is_libc(p) || p == python.path
        })
        .ok_or_else(|| InjectError::NoSafeStop {
            pid,
            detail: "no `syscall; ret` instruction found in libc or Python".into(),
        })?;
        report.thread = Some(tid);
        report.thread_was_in_syscall = (regs.orig_rax as i64) >= 0;
        queue_source(
            pid,
            python,
            payload,
            channel,
            step,
            &mut tracee,
            trap,
            gadget,
            report,
        )?;
        return tracee.detach();
    }
    Err(InjectError::NoSafeStop {
        pid,
        detail: format!("gave up after {MAX_ATTEMPTS} attempts: {last_refusal}"),
    })
}

#[allow(clippy::too_many_arguments)]
fn queue_source(
    pid: i32,
    python: &PythonModule,
    payload: &snippet::Payload,
    channel: &StatusChannel,
    step: Duration,
    tracee: &mut Tracee,
    trap: Trap,
    gadget: u64,
    report: &mut InjectReport,
) -> Result<(), InjectError> {
    // The source names its own page, so size the page for the widest numbers first.
    let widest = snippet::wrap(payload, channel.target_path(), Some((u64::MAX, usize::MAX))).len();
    let page_len = (widest + 1).div_ceil(4096) * 4096;
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let page = tracee.syscall(
        gadget,
        libc::SYS_mmap,
        &[0, page_len as u64, prot, flags, u64::MAX, 0],
        trap,
        step,
    )?;
    if (page as i64) < 0 && (page as i64) > -4096 {
        return Err(InjectError::RemoteCall {
            pid,
            what: "mmap",
            detail: std::io::Error::from_raw_os_error(-(page as i64) as i32).to_string(),
        });
    }
    let unmap = |tracee: &mut Tracee| {
        let _ = tracee.syscall(
            gadget,
            libc::SYS_munmap,
            &[page, page_len as u64],
            trap,
            step,
        );
    };
    let mut source =
        snippet::wrap(payload, channel.target_path(), Some((page, page_len))).into_bytes();
    source.push(0);
    if let Err(e) = tracee.write(page, &source) {
        unmap(tracee);
        return Err(InjectError::io(format!("/proc/{}/mem", tracee.tid()), e));
    }
    let rc = match tracee.call(
        python.add_pending_call,
        &[python.run_simple_string, page],
        trap,
        step,
    ) {
        Ok(rc) => rc as u32 as i32,
        Err(e) => {
            // A timed-out call may still hold the page; only unmap when it certainly returned.
            if !matches!(
                e,
                InjectError::Timeout { .. } | InjectError::TargetExited { .. }
            ) {
                unmap(tracee);
            }
            return Err(e);
        }
    };
    if rc != 0 {
        unmap(tracee);
        return Err(InjectError::PendingCallRefused { pid, code: rc });
    }
    report.page = Some(page);
    Ok(())
}

fn is_libc(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("libc.so") || name.starts_with("libc-") || name.starts_with("ld-musl")
}

/// Picks a way back from our calls whose signal this thread neither blocks nor ignores: a fault
/// on a blocked signal would make the kernel reset the program's handler for it.
fn choose_trap(
    pid: i32,
    tid: i32,
    maps: &[Mapping],
    tracee: &Tracee,
) -> Result<Option<Trap>, InjectError> {
    let thread = procfs::read_status(&format!("/proc/{pid}/task/{tid}/status"), pid)?;
    let off = |bit: u64| thread.sig_blocked & bit == 0 && thread.sig_ignored & bit == 0;
    if off(SIGSEGV_BIT) {
        return Ok(Some(Trap::ReturnToZero));
    }
    if off(SIGTRAP_BIT) {
        return Ok(find_bytes(tracee, maps, &[0xcc], is_libc).map(|addr| Trap::Int3 { addr }));
    }
    Ok(None)
}

/// Address of `pattern` in an executable mapping whose path passes `which`.
fn find_bytes(
    tracee: &Tracee,
    maps: &[Mapping],
    pattern: &[u8],
    which: impl Fn(&str) -> bool,
) -> Option<u64> {
    const CHUNK: u64 = 64 * 1024;
    for m in maps
        .iter()
        .filter(|m| m.executable && m.readable && which(&m.path))
    {
        let mut at = m.start;
        while at < m.end {
            let len = CHUNK.min(m.end - at) as usize;
            let mut buf = vec![0u8; len];
            if tracee.read(at, &mut buf).is_err() {
                break;
            }
            if let Some(i) = buf.windows(pattern.len()).position(|w| w == pattern) {
                return Some(at + i as u64);
            }
            // Overlap so a pattern across chunks is not missed.
            at += (len as u64).saturating_sub(pattern.len() as u64 - 1).max(1);
        }
    }
    None
}
