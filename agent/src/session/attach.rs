//! The in-process half of attach: `ffiprof_attach_start`, called by the injected Python source on
//! the target's main thread (holding the GIL), and the worker thread that records for the window,
//! reports progress through a status file, and on stop restores every hook and writes the profile
//! (`session::stop`). A later attach to the same process starts a fresh session in the same loaded
//! agent (`session::start_attached` resets what the previous one left).
//!
//! The back-channel is a directory the CLI created for this session (0700, owned by the target's
//! user); the agent writes `status` there atomically (temp file + rename, `O_NOFOLLOW`, mode 0600)
//! and the CLI asks it to stop by creating `stop`. A status line is `STATE key=value ... [-- text]`.

use std::ffi::{c_char, c_int, CStr};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ffiprof_protocol::attach::{AgentStatus, AttachConfig};

use crate::config::Config;

fn write_status(session: &Path, st: &AgentStatus) {
    let tmp = session.join(".status.tmp");
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| f.write_all(st.render().as_bytes()));
    if written.is_ok() {
        let _ = std::fs::rename(&tmp, session.join("status"));
    }
}

/// Set while an attach session records in this process (one at a time). A session that ended
/// leaves the agent loaded and idle; the next one resets it and starts again.
static SESSION_ACTIVE: AtomicBool = AtomicBool::new(false);

/// Entry point for attach, called by the injected source with the rendered [`AttachConfig`].
/// Installs the hooks here, on the target's main thread (the injected source calls through
/// `ctypes.CDLL`, which releases the GIL; the type slots are patched after taking it back with
/// `PyGILState_Ensure`), starts the worker and returns 0; any failure is written to the
/// session's status and returned as -1. Never unwinds into C.
///
/// # Safety
/// `config` must be NULL or a NUL-terminated string valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn ffiprof_attach_start(config: *const c_char) -> c_int {
    let saved = crate::runtime::errno();
    let rc = crate::runtime::guard(-1, || {
        if config.is_null() {
            return -1;
        }
        // SAFETY: the caller passes a NUL-terminated string (ctypes c_char_p) valid for the call.
        let text = unsafe { CStr::from_ptr(config) }
            .to_string_lossy()
            .into_owned();
        match AttachConfig::parse(&text) {
            Ok(cfg) => start(cfg),
            Err(_) => -1,
        }
    });
    crate::runtime::set_errno(saved);
    rc
}

fn start(cfg: AttachConfig) -> c_int {
    let session = cfg.session.clone();
    let fail = |detail: String| {
        write_status(
            &session,
            &AgentStatus {
                state: "error".into(),
                detail,
                ..Default::default()
            },
        );
        -1
    };
    if SESSION_ACTIVE.swap(true, Ordering::AcqRel) {
        return fail(
            "another attach session is still active in this process (recording, or detaching)"
                .into(),
        );
    }
    if crate::session::recording() {
        SESSION_ACTIVE.store(false, Ordering::Release);
        return fail(
            "this process is already being profiled by `ffiprof run` (the agent was preloaded); \
             its profile is written when it exits"
                .into(),
        );
    }
    let agent_cfg = Config {
        output: cfg.session.join("profile.json"),
        libs: cfg.libs.clone(),
        interval: cfg.interval,
        debug: std::env::var(crate::config::ENV_DEBUG).is_ok_and(|v| v == "1"),
        force_monotonic: false,
        timing_sample_every: cfg.timing_sample_every,
        stack_sample_every: 64,
        python_layer: true,
        pointer_flow: true,
        site_skip: cfg.site_skip.clone(),
        mode: crate::config::Mode::Attach,
        claim_file: None,
    };
    let began = Instant::now();
    let started = crate::session::start_attached(agent_cfg);
    write_status(
        &cfg.session,
        &AgentStatus {
            state: "started".into(),
            detail: match started.python {
                Ok(n) => format!("python layer: {n} type slots replaced"),
                Err(e) => format!("python layer off: {e}"),
            },
            ..Default::default()
        },
    );
    *WORKER.lock() = Some(Worker {
        cfg,
        began,
        handle: None,
        ending: false,
    });
    match spawn_worker() {
        Ok(()) => 0,
        Err(e) => {
            *WORKER.lock() = None;
            crate::session::stop("error", |_| {});
            SESSION_ACTIVE.store(false, Ordering::Release);
            fail(format!("cannot start the attach thread: {e}"))
        }
    }
}

/// The attach session's worker thread: what it needs to run (again, after a fork paused it).
struct Worker {
    cfg: AttachConfig,
    began: Instant,
    handle: Option<std::thread::JoinHandle<()>>,
    /// The worker is ending the session (it may be waiting for the GIL): a fork must not wait
    /// for it.
    ending: bool,
}

static WORKER: parking_lot::Mutex<Option<Worker>> = parking_lot::Mutex::new(None);
/// Set before a fork: the worker leaves its loop without ending the session.
static PAUSE: AtomicBool = AtomicBool::new(false);
/// Futex word the worker sleeps on between looks (a pause wakes it at once).
static WORKER_WAKE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// The worker was paused for a fork and should run again.
static RESUME: AtomicBool = AtomicBool::new(false);

/// Starts (or restarts, after a fork) the worker thread of the current session.
fn spawn_worker() -> std::io::Result<()> {
    let mut guard = WORKER.lock();
    let Some(w) = guard.as_mut() else {
        return Ok(());
    };
    let (cfg, began) = (w.cfg.clone(), w.began);
    PAUSE.store(false, Ordering::Release);
    let handle = crate::record::writer::spawn_agent_thread("ffiprof-attach", move || {
        crate::runtime::guard((), || worker(&cfg, began));
    })?;
    w.handle = Some(handle);
    Ok(())
}

/// Before fork: the worker thread leaves its loop and is joined, so that the program forks
/// with exactly the threads it made (CPython 3.12+ counts them and warns about any other).
/// A worker that is already ending the session is left alone.
pub(super) fn pause_for_fork() {
    let handle = {
        let mut guard = WORKER.lock();
        let Some(w) = guard.as_mut().filter(|w| !w.ending) else {
            return;
        };
        // Under the lock: the worker checks PAUSE and sets `ending` under it too.
        PAUSE.store(true, Ordering::Release);
        w.handle.take()
    };
    let Some(handle) = handle else {
        return;
    };
    WORKER_WAKE.fetch_add(1, Ordering::AcqRel);
    crate::record::writer::futex_wake(&WORKER_WAKE);
    let _ = handle.join();
    RESUME.store(true, Ordering::Release);
}

/// After fork, in the parent: the worker runs again once the program executes Python (a
/// pending call, after CPython has counted its threads).
pub(super) fn resume_after_fork() {
    if RESUME.swap(false, Ordering::AcqRel) && !crate::session::add_pending_call(resume_worker) {
        // No interpreter to run it: resume now rather than never.
        let _ = spawn_worker();
    }
}

extern "C" fn resume_worker(_: *mut libc::c_void) -> i32 {
    let _ = crate::runtime::guard(Ok(()), spawn_worker);
    0
}

/// Calls recorded so far by every thread, in libraries the filter keeps.
pub fn calls_so_far() -> u64 {
    let mut total = 0;
    crate::record::recorder::each_thread(|r| {
        r.each(|s| {
            if !s.excluded {
                total += s.calls.get();
            }
        })
    });
    total
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn worker(cfg: &AttachConfig, began: Instant) {
    let stop_file = cfg.session.join("stop");
    let mut status = AgentStatus {
        state: "recording".into(),
        ..Default::default()
    };
    let mut last_report = Instant::now();
    let mut first_reported = false;
    loop {
        status.calls = calls_so_far();
        if status.first_call_unix_ns == 0 && status.calls > 0 {
            status.first_call_unix_ns = unix_ns();
        }
        status.elapsed_ms = began.elapsed().as_millis() as u64;
        let done = stop_file.exists()
            || cfg.duration.is_some_and(|d| began.elapsed() >= d)
            || cfg.cli_pid.is_some_and(|p| !alive(p))
            || !cfg.session.is_dir();
        {
            let mut guard = WORKER.lock();
            if PAUSE.load(Ordering::Acquire) {
                // A fork is waiting for this thread to end; the session goes on (fork_prepare).
                return;
            }
            if done {
                if let Some(w) = guard.as_mut() {
                    w.ending = true;
                }
                break;
            }
        }
        let first_seen_now = status.calls > 0 && !first_reported;
        if first_seen_now || last_report.elapsed() >= Duration::from_millis(100) {
            write_status(&cfg.session, &status);
            last_report = Instant::now();
            first_reported |= status.calls > 0;
        }
        // Fine-grained until the first call (it measures attach latency), then relaxed.
        let seen = WORKER_WAKE.load(Ordering::Acquire);
        crate::record::writer::futex_wait(
            &WORKER_WAKE,
            seen,
            Some(if status.first_call_unix_ns == 0 {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(20)
            }),
        );
    }
    let stopped = crate::session::stop("detach", |profile| {
        // The data is safe; the type slots come next, once the GIL can be had.
        let mut written = status.clone();
        written.state = "written".into();
        written.calls = calls_so_far();
        written.elapsed_ms = began.elapsed().as_millis() as u64;
        written.detail = profile.map(|p| p.display().to_string()).unwrap_or_default();
        write_status(&cfg.session, &written);
    });
    status.state = "detached".into();
    status.calls = calls_so_far();
    status.restored = (stopped.got_restored + stopped.slots_restored) as u64;
    status.elapsed_ms = began.elapsed().as_millis() as u64;
    status.detail = stopped
        .profile
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    *WORKER.lock() = None;
    // Open for the next session before saying so: a CLI that sees "detached" may attach again.
    SESSION_ACTIVE.store(false, Ordering::Release);
    write_status(&cfg.session, &status);
}
