//! The in-process half of attach: `ffiprof_attach_start`, called by the injected Python source on
//! the target's main thread (holding the GIL), and the worker thread that records for the window,
//! reports progress through a status file, and on stop restores every hook and writes the profile
//! (`agent::stop`). A later attach to the same process starts a fresh session in the same loaded
//! agent (`agent::start_attached` resets what the previous one left).
//!
//! The back-channel is a directory the CLI created for this session (0700, owned by the target's
//! user); the agent writes `status` there atomically (temp file + rename, `O_NOFOLLOW`, mode 0600)
//! and the CLI asks it to stop by creating `stop`. A status line is `STATE key=value ... [-- text]`.

use std::ffi::{c_char, c_int, CStr};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::Config;

/// What the CLI tells the agent, one `key=value` per line (paths may not contain newlines).
#[derive(Debug, Clone, PartialEq)]
pub struct AttachConfig {
    /// The session directory as the target sees it.
    pub session: PathBuf,
    /// Stop by itself after this long (None: until asked).
    pub duration: Option<Duration>,
    /// Detach when this process (the CLI) is gone.
    pub cli_pid: Option<u32>,
    pub libs: Vec<String>,
    pub interval: Duration,
    /// Time one call in N; 0 = the agent's default (as in `run`: every call with the ffi_call
    /// layer alone, a sample with the Python layer).
    pub timing_sample_every: u32,
    /// `--site-skip` patterns (one line each; a pattern holds no newline).
    pub site_skip: Vec<String>,
}

impl AttachConfig {
    pub fn render(&self) -> String {
        let mut s = format!(
            "session={}\ninterval={}\ntiming={}\n",
            self.session.display(),
            self.interval.as_secs_f64(),
            self.timing_sample_every
        );
        if let Some(d) = self.duration {
            s += &format!("duration={}\n", d.as_secs_f64());
        }
        if let Some(p) = self.cli_pid {
            s += &format!("cli_pid={p}\n");
        }
        for lib in &self.libs {
            s += &format!("lib={lib}\n");
        }
        for pattern in &self.site_skip {
            s += &format!("site_skip={pattern}\n");
        }
        s
    }

    pub fn parse(text: &str) -> Result<AttachConfig, String> {
        let mut cfg = AttachConfig {
            session: PathBuf::new(),
            duration: None,
            cli_pid: None,
            libs: Vec::new(),
            interval: Duration::from_secs(1),
            timing_sample_every: 0,
            site_skip: Vec::new(),
        };
        let secs = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(Duration::from_secs_f64)
        };
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("bad config line {line:?}"))?;
            match key {
                "session" => cfg.session = PathBuf::from(value),
                "duration" => cfg.duration = secs(value),
                "cli_pid" => cfg.cli_pid = value.parse().ok(),
                "lib" => cfg.libs.push(value.to_owned()),
                "site_skip" => cfg.site_skip.push(value.to_owned()),
                "interval" => cfg.interval = secs(value).unwrap_or(cfg.interval),
                "timing" => cfg.timing_sample_every = value.parse().unwrap_or(0),
                _ => {} // newer CLI, older agent: ignore what we do not know
            }
        }
        if !cfg.session.is_absolute() {
            return Err("the config names no absolute session directory".into());
        }
        Ok(cfg)
    }
}

/// One report from the agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentStatus {
    /// `started`, `recording`, `written` (the final profile is written; the type slots are
    /// restored next, when the GIL can be had), `detached` or `error`.
    pub state: String,
    pub elapsed_ms: u64,
    pub calls: u64,
    /// Wall-clock time of the first call seen (0: none yet), for attach latency.
    pub first_call_unix_ns: u64,
    /// Hooks restored at detach.
    pub restored: u64,
    /// The profile written at detach, or the error.
    pub detail: String,
}

impl AgentStatus {
    pub fn render(&self) -> String {
        format!(
            "{} elapsed_ms={} calls={} first_call_unix_ns={} restored={} -- {}\n",
            self.state,
            self.elapsed_ms,
            self.calls,
            self.first_call_unix_ns,
            self.restored,
            self.detail
        )
    }

    pub fn parse(text: &str) -> Option<AgentStatus> {
        let (head, detail) = text.split_once(" -- ").unwrap_or((text, ""));
        let mut words = head.split_whitespace();
        let mut st = AgentStatus {
            state: words.next()?.to_owned(),
            detail: detail.trim_end().to_owned(),
            ..Default::default()
        };
        for word in words {
            let Some((k, v)) = word.split_once('=') else {
                continue;
            };
            let v: u64 = v.parse().unwrap_or(0);
            match k {
                "elapsed_ms" => st.elapsed_ms = v,
                "calls" => st.calls = v,
                "first_call_unix_ns" => st.first_call_unix_ns = v,
                "restored" => st.restored = v,
                _ => {}
            }
        }
        Some(st)
    }

    /// Reads `status` in a session directory (None: not written yet).
    pub fn read(session: &Path) -> Option<AgentStatus> {
        std::fs::read_to_string(session.join("status"))
            .ok()
            .and_then(|t| AgentStatus::parse(&t))
    }
}

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
    if crate::agent::recording() {
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
        site_skip: cfg.site_skip.clone(),
        mode: "attach",
    };
    let began = Instant::now();
    let started = crate::agent::start_attached(agent_cfg);
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
    register_fork_handlers();
    match spawn_worker() {
        Ok(()) => 0,
        Err(e) => {
            *WORKER.lock() = None;
            crate::agent::stop("error", |_| {});
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

fn register_fork_handlers() {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if !REGISTERED.swap(true, Ordering::AcqRel) {
        // SAFETY: plain extern "C" functions that catch their own panics.
        unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), None) };
    }
}

/// Before fork: the worker thread leaves its loop and is joined, so that the program forks
/// with exactly the threads it made (CPython 3.12+ counts them and warns about any other).
/// A worker that is already ending the session is left alone.
extern "C" fn fork_prepare() {
    crate::runtime::guard((), || {
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
    });
}

/// After fork, in the parent: the worker runs again once the program executes Python (a
/// pending call, after CPython has counted its threads).
extern "C" fn fork_parent() {
    crate::runtime::guard((), || {
        if RESUME.swap(false, Ordering::AcqRel) && !crate::agent::add_pending_call(resume_worker) {
            // No interpreter to run it: resume now rather than never.
            let _ = spawn_worker();
        }
    });
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
    let stopped = crate::agent::stop("detach", |profile| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips() {
        let cfg = AttachConfig {
            session: "/tmp/s".into(),
            duration: Some(Duration::from_millis(2500)),
            cli_pid: Some(42),
            libs: vec!["libm".into(), "*fixture*".into()],
            interval: Duration::from_secs(1),
            timing_sample_every: 4,
            site_skip: vec!["*/ffi.py".into(), "*/app.py:add".into()],
        };
        assert_eq!(AttachConfig::parse(&cfg.render()).unwrap(), cfg);
        assert!(AttachConfig::parse("session=relative\n").is_err());
    }

    #[test]
    fn status_round_trips() {
        let st = AgentStatus {
            state: "detached".into(),
            elapsed_ms: 5,
            calls: 9,
            first_call_unix_ns: 7,
            restored: 3,
            detail: "/x/p.json".into(),
        };
        assert_eq!(AgentStatus::parse(&st.render()).unwrap(), st);
        assert_eq!(AgentStatus::parse("started").unwrap().state, "started");
    }
}
