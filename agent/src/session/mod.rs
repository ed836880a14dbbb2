//! The session: the agent's life in a host process — start (from the LD_PRELOAD constructor or
//! attach), stop, fork, exec, exit, and the profile's meta. What each part of the agent does at
//! the session's turns (reset for a new attach session, fork) is one table, [`lifecycle`].
//!
//! Rule one is never to harm the host: every entry from C catches panics, a hook that cannot be
//! installed is skipped and listed in the profile, and in a process that is not Python (the pyenv
//! shim is bash; `timeout`, compilers and other children inherit LD_PRELOAD) nothing happens at all.
//!
//! `run` starts once and records until the process ends. `attach` may come and go many times in
//! one process: [`start_attached`] resets what a previous session left (writer, recorders,
//! function table) and starts again, [`stop`] turns recording off, restores every GOT entry and
//! type slot, ends the snapshotter and writes the session's final profile.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use ffiprof_profile::Profile;
use parking_lot::Mutex;

pub mod attach;
pub mod lifecycle;

use crate::config::{self, Config, LibFilter, Mode};
use crate::hook;
use crate::record::clock::{self, Calibration};
use crate::record::{snapshot, writer};
use crate::runtime;
use crate::runtime::{debug, errno, set_errno, ACTIVE, PID};

static IS_ROOT: AtomicBool = AtomicBool::new(false);
/// Whether this root process took the run's output path (see [`claim_output`]): 0 not yet
/// decided, [`CLAIM_WON`], [`CLAIM_LOST`].
static CLAIM: AtomicU8 = AtomicU8::new(0);
const CLAIM_WON: u8 = 1;
const CLAIM_LOST: u8 = 2;
static CONFIG: Mutex<Option<Config>> = Mutex::new(None);
/// Why the Python layer is off, when it was asked for and could not start.
static PYTHON_ERROR: Mutex<Option<String>> = Mutex::new(None);
/// Monotonic time (ns) recording began and, once [`stop`]ped, ended: the profile's duration is
/// the window actually recorded, not the time until the final profile was built.
static RECORDING_SINCE: AtomicU64 = AtomicU64::new(0);
static RECORDING_UNTIL: AtomicU64 = AtomicU64::new(0);

/// The slow path of a thread's first call to a function: learn the function's library (and
/// whether `--lib` excludes it), and start the snapshotter in a freshly forked child.
fn first_sighting(addr: usize) -> bool {
    let saved = errno();
    let excluded = runtime::guard(false, || {
        if PID.load(Ordering::Relaxed) != std::process::id() {
            // A vfork child sharing our memory: record nothing of its own.
            return false;
        }
        if let Some(c) = CONFIG.lock().as_ref() {
            writer::start(c.interval);
            if c.mode != Mode::Attach {
                first_call_of_run();
            }
        }
        crate::symbols::classify(addr)
    });
    set_errno(saved);
    excluded
}

/// CPython, or PyPy (whose C API is `PyPy_*`): the ffi layer records either; the Python layer
/// refuses PyPy with the reason (`python::api`).
fn is_python_process() -> bool {
    runtime::global_symbol(c"Py_IsInitialized").is_some()
        || runtime::global_symbol(c"PyPy_IsInitialized").is_some()
}

/// The LD_PRELOAD entry point (see `lib.rs`): configure from `FFIPROF_*`, patch, and start.
pub fn init_from_env() {
    let Some(cfg) = Config::from_env() else {
        return;
    };
    runtime::set_debug(cfg.debug);
    if !is_python_process() {
        debug("not a Python process: inert");
        return;
    }
    // Nobody's descendant in the run. (After an exec, the new image is its own descendant: the
    // old one wrote the output path before the exec.)
    let root = std::env::var_os(config::ENV_CLAIMED).is_none();
    if root {
        // Descendants (exec'd Python children) must not overwrite our profile.
        std::env::set_var(config::ENV_CLAIMED, std::process::id().to_string());
    }
    IS_ROOT.store(root, Ordering::Relaxed);
    start(cfg, true);
    // No signal handler and no Python exit hook yet: see `first_call_of_run`.
    // SAFETY: registering plain extern "C" functions that catch their own panics.
    unsafe {
        libc::atexit(at_exit);
    }
    lifecycle::register_fork_handlers();
}

/// Starts recording with `cfg`: clock, filters, hooks, snapshotter.
pub fn start(cfg: Config, process_hooks: bool) {
    start_with(cfg, process_hooks, false);
}

/// What [`start_attached`] installed.
#[derive(Debug, Clone)]
pub struct Started {
    /// Type slots the Python layer replaced on existing types, or why it could not.
    pub python: Result<usize, String>,
}

impl Default for Started {
    fn default() -> Self {
        Started { python: Ok(0) }
    }
}

/// Starts a recording session in a process that is already running (attach), after forgetting
/// whatever an earlier session left ([`lifecycle::reset`]: the final-profile flag, every
/// thread's counts, the function table, hook statuses, the recording window).
/// The types of ctypes and cffi exist already, so the Python layer patches them in place.
/// Call with recording off; the caller may hold the GIL or not.
pub fn start_attached(cfg: Config) -> Started {
    if ACTIVE.load(Ordering::Acquire) {
        return Started {
            python: Err("already recording".into()),
        };
    }
    lifecycle::reset(&cfg);
    lifecycle::register_fork_handlers();
    start_with(cfg, false, true)
}

/// The session's own part of [`lifecycle::reset`]: no Python-layer error, no recording window.
fn reset_session() {
    *PYTHON_ERROR.lock() = None;
    RECORDING_UNTIL.store(0, Ordering::Release);
}

/// In a forked child: it is not the process the user ran, so it writes `NAME.PID.json`.
fn forget_root() {
    IS_ROOT.store(false, Ordering::Relaxed);
}

fn start_with(mut cfg: Config, process_hooks: bool, existing_types: bool) -> Started {
    // What the layers below ask of this one and of the Python layer, once per process.
    runtime::set_first_sighting(first_sighting);
    writer::set_fill_meta(fill_meta);
    snapshot::set_sites(snapshot::Sites {
        describe: crate::python::describe_site,
        through: crate::python::site_through,
        frames_and_stacks: crate::python::frames::frames_and_stacks,
        arg_evidence: crate::python::arg_evidence::fill_site,
    });
    snapshot::set_bindings(crate::python::binding::for_snapshot);
    clock::init(cfg.force_monotonic);
    // SAFETY: Py_AddPendingCall and Py_IsInitialized have these signatures in every CPython 3.
    unsafe {
        ADD_PENDING_CALL.set(runtime::global_symbol(c"Py_AddPendingCall").unwrap_or(0));
        IS_INITIALIZED.set(runtime::global_symbol(c"Py_IsInitialized").unwrap_or(0));
    }
    PID.store(std::process::id(), Ordering::Relaxed);
    crate::symbols::set_filter(LibFilter::new(&cfg.libs));
    let python = if cfg.python_layer {
        match crate::python::enable() {
            Ok(version) => {
                debug(&format!("Python layer on ({version})"));
                true
            }
            Err(e) => {
                debug(&format!("Python layer off: {e}"));
                *PYTHON_ERROR.lock() = Some(e);
                false
            }
        }
    } else {
        false
    };
    if cfg.timing_sample_every == 0 {
        cfg.timing_sample_every = if python {
            config::DEFAULT_PYTHON_TIMING
        } else {
            1
        };
    }
    crate::python::TIMING_EVERY.store(cfg.timing_sample_every, Ordering::Relaxed);
    crate::python::STACK_EVERY.store(cfg.stack_sample_every, Ordering::Relaxed);
    crate::record::pointers::ENABLED.store(cfg.pointer_flow, Ordering::Relaxed);
    crate::python::frames::set_site_skip(&cfg.site_skip);
    let interval = cfg.interval;
    debug(&format!("recording to {}", cfg.output.display()));
    runtime::set_mode(cfg.mode);
    *CONFIG.lock() = Some(cfg);
    let mut started = Started::default();
    if python && existing_types {
        // Before recording starts, so that every recorded call has its Python half.
        started.python = crate::python::slots::with_gil(|| {
            // SAFETY: with_gil holds the GIL while this runs.
            unsafe { crate::python::slots::install_on_existing() }
        })
        .unwrap_or_else(|| Err("the interpreter is not running (finalizing?)".into()));
        match &started.python {
            Ok(n) => debug(&format!(
                "Python layer: {n} slots replaced on existing types"
            )),
            Err(e) => {
                debug(&format!("Python layer off: {e}"));
                *PYTHON_ERROR.lock() = Some(e.clone());
            }
        }
    }
    hook::install(process_hooks);
    if python && existing_types {
        // With `--lib`: the builtins of extension modules imported before attach came in.
        let n = crate::python::slots::with_gil(|| {
            // SAFETY: with_gil holds the GIL while this runs; the hooks are installed.
            unsafe { crate::python::builtin_call::bracket_loaded_modules() }
        });
        debug(&format!("Python layer: {n:?} extension builtins bracketed"));
    }
    clock::restart();
    RECORDING_SINCE.store(clock::monotonic_ns(), Ordering::Release);
    ACTIVE.store(true, Ordering::Release);
    writer::start(interval);
    started
}

/// What [`stop`] did.
#[derive(Debug, Clone, Default)]
pub struct Stopped {
    /// GOT entries put back.
    pub got_restored: usize,
    /// Type slots put back (0 when the GIL could not be had: the interpreter is finalizing).
    pub slots_restored: usize,
    /// The final profile, or None when nothing was recorded.
    pub profile: Option<PathBuf>,
}

/// Ends a recording session (attach's detach): recording off, every GOT entry restored, the
/// snapshotter ended, the final profile written, then every type slot restored with the GIL
/// held. The profile is written before the GIL is asked for, so that even an interpreter that
/// ends this thread (a thread taking the GIL while Python finalizes is made to exit) loses no
/// data. Calls in flight finish through the hook or wrapper they entered, whose code stays
/// mapped; they see recording off and pass straight through. `written` is told where the
/// profile went as soon as it is written: taking the GIL may wait for as long as the main thread
/// holds it (a C extension that never releases it), and the data need not wait with it.
/// Never panics.
pub fn stop(reason: &'static str, written: impl FnOnce(Option<&std::path::Path>)) -> Stopped {
    let mut stopped = Stopped::default();
    runtime::guard((), || {
        ACTIVE.store(false, Ordering::SeqCst);
        crate::record::call_ctx::forget_lean_thread();
        RECORDING_UNTIL.store(clock::monotonic_ns(), Ordering::Release);
        stopped.got_restored = hook::restore_all();
        writer::stop();
        stopped.profile = writer::write_now(reason, true);
        written(stopped.profile.as_deref());
        if crate::python::enabled() {
            stopped.slots_restored = crate::python::slots::with_gil(|| {
                // SAFETY: with_gil holds the GIL while this runs.
                unsafe {
                    crate::python::slots::remove_from_existing()
                        + crate::python::builtin_call::restore_all()
                }
            })
            .unwrap_or(0);
        }
    });
    stopped
}

/// Whether calls are being recorded now.
pub fn recording() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// Where this process writes, or None when it should not write (a child that recorded nothing).
fn output_path(recorded: bool) -> Option<PathBuf> {
    let cfg = CONFIG.lock();
    let cfg = cfg.as_ref()?;
    if cfg.mode == Mode::Attach {
        // The session's own path, as configured: the CLI names and owns it.
        recorded.then(|| cfg.output.clone())
    } else if IS_ROOT.load(Ordering::Relaxed) {
        if !recorded && !python_ran() {
            // A program that links libpython without running it (perf): it has nothing to say,
            // and must not take the output path from the Python program it starts.
            return None;
        }
        if claim_output(cfg.claim_file.as_deref()) {
            Some(cfg.output.clone())
        } else {
            recorded.then(|| config::per_pid_path(&cfg.output, std::process::id()))
        }
    } else if recorded {
        Some(config::per_pid_path(&cfg.output, std::process::id()))
    } else {
        None
    }
}

/// Whether this root process holds the run's output path. Decided once, at its first write with
/// something to write: the first of the run's root processes (siblings a shell starts one after
/// the other each find no `FFIPROF_CLAIMED`) creates the claim file, exclusively, and holds the
/// path; the others write `NAME.PID.json`, so that no profile overwrites another. The file holds
/// the winner's pid, for whoever looks. Without a claim file (the
/// agent preloaded by hand), or when it cannot be created, every root process takes the path.
fn claim_output(claim_file: Option<&std::path::Path>) -> bool {
    match CLAIM.load(Ordering::Relaxed) {
        CLAIM_WON => return true,
        CLAIM_LOST => return false,
        _ => {}
    }
    let won = match claim_file {
        None => true,
        Some(file) => match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(file)
        {
            Ok(mut f) => {
                use std::io::Write;
                let _ = f.write_all(std::process::id().to_string().as_bytes());
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => {
                debug(&format!("claim file {}: {e}", file.display()));
                true
            }
        },
    };
    CLAIM.store(if won { CLAIM_WON } else { CLAIM_LOST }, Ordering::Relaxed);
    won
}

/// Whether the interpreter ever ran in this process: running now, or finalized (a program that
/// only links libpython, as perf does, never starts it). Both calls need no interpreter.
fn python_ran() -> bool {
    let call = |name: &std::ffi::CStr| {
        runtime::global_symbol(name).is_some_and(|f| {
            // SAFETY: Py_IsInitialized, _Py_IsFinalizing, Py_IsFinalizing and
            // PyPy_IsInitialized are `int (void)` and callable at any time.
            unsafe {
                let f: unsafe extern "C" fn() -> libc::c_int = runtime::fn_at(f);
                f() != 0
            }
        })
    };
    call(c"Py_IsInitialized")
        || call(c"Py_IsFinalizing")
        || call(c"_Py_IsFinalizing")
        || call(c"PyPy_IsInitialized")
}

fn python_version() -> Option<String> {
    let f = runtime::global_symbol(c"Py_GetVersion")
        .or_else(|| runtime::global_symbol(c"PyPy_GetVersion"))?;
    // SAFETY: Py_GetVersion(void) (PyPy: PyPy_GetVersion) returns a static NUL-terminated
    // string and needs no interpreter.
    unsafe {
        let f: unsafe extern "C" fn() -> *const libc::c_char = runtime::fn_at(f);
        let p = f();
        (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
    }
}

/// Fills the profile's meta; returns the path to write to (None: do not write).
fn fill_meta(
    p: &mut Profile,
    cal: &Calibration,
    reason: &'static str,
    complete: bool,
) -> Option<PathBuf> {
    let path = output_path(!p.functions.is_empty())?;
    let cfg = CONFIG.lock().clone()?;
    let m = &mut p.meta;
    m.pid = std::process::id();
    // SAFETY: getppid has no preconditions.
    m.ppid = unsafe { libc::getppid() } as u32;
    m.command = std::fs::read("/proc/self/cmdline")
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default();
    m.python = python_version();
    m.executable = std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    m.start_unix_ns = cal.start_unix_ns;
    m.duration_ns = match (
        RECORDING_SINCE.load(Ordering::Acquire),
        RECORDING_UNTIL.load(Ordering::Acquire),
    ) {
        (since, until) if since != 0 && until >= since => until - since,
        _ => cal.elapsed_ns,
    };
    m.probe_overhead_ns = cal.native_floor_ns();
    m.clock = clock::clock_name().to_string();
    m.mode = cfg.mode.as_str().to_string();
    m.write_reason = reason.to_string();
    m.complete = complete;
    m.timing_sample_every = cfg.timing_sample_every.max(1);
    m.stack_sample_every = cfg.stack_sample_every;
    m.agent_version = env!("CARGO_PKG_VERSION").to_string();
    m.lib_filter = cfg.libs.clone();
    m.site_skip = cfg.site_skip.clone();
    m.python_offsets = crate::python::published_offsets();
    p.hooks = hook::statuses();
    if let Some(e) = PYTHON_ERROR.lock().clone() {
        p.hooks.push(ffiprof_profile::HookStatus {
            hook: "python-layer".into(),
            module: m.executable.clone(),
            installed: false,
            error: Some(e),
        });
    }
    Some(path)
}

extern "C" fn at_exit() {
    runtime::guard((), || hook::process::before_leaving("exit"));
}

/// Set once the interpreter's exit hook is registered (it is inherited across fork).
static PY_AT_EXIT: AtomicBool = AtomicBool::new(false);

/// What `run` installs once the process has something to lose — its first recorded call — and
/// not before: by then the interpreter has read every signal disposition into its own table
/// (`signal.getsignal` then reports what the program set, as untraced, and CPython has put its
/// own SIGINT handler where it found the default), and its runtime can take an exit hook.
/// - SIGTERM/SIGHUP handlers where the program left the default action (`writer`);
/// - `Py_AtExit`: finalization writes the profile. An unhandled KeyboardInterrupt ends CPython
///   by re-raising SIGINT after finalizing, so the C `atexit` handlers never run then.
fn first_call_of_run() {
    writer::install_signal_handlers();
    if !PY_AT_EXIT.swap(true, Ordering::AcqRel) {
        if let Some(f) = runtime::global_symbol(c"Py_AtExit") {
            // SAFETY: Py_AtExit(void (*)(void)) takes a plain function that catches its own
            // panics, and needs no thread state.
            unsafe {
                let f: unsafe extern "C" fn(extern "C" fn()) -> i32 = runtime::fn_at(f);
                f(at_exit);
            }
        }
    }
}

/// In the parent after fork: if the snapshotter was ended for the fork, has it started again by a
/// pending call (without one, the next first sighting of a function starts it).
fn restart_writer_after_fork() {
    if writer::take_restart_after_fork() {
        add_pending_call(restart_writer);
    }
}

/// Starts the snapshotter again after a fork ended it (a pending call: runs on the main thread
/// once the program executes Python again, after CPython counted its threads).
extern "C" fn restart_writer(_: *mut libc::c_void) -> i32 {
    runtime::guard((), || {
        if ACTIVE.load(Ordering::Acquire) {
            if let Some(c) = CONFIG.lock().as_ref() {
                writer::start(c.interval);
            }
        }
    });
    0
}

/// Has the interpreter run `f` on its main thread at its next safe point (`Py_AddPendingCall`,
/// which needs no thread state and may be called from a fork handler). False when there is no
/// interpreter or its queue is full.
pub fn add_pending_call(f: extern "C" fn(*mut libc::c_void) -> i32) -> bool {
    let (Some(add), Some(initialized)) = (ADD_PENDING_CALL.get(), IS_INITIALIZED.get()) else {
        return false;
    };
    // A program may link libpython and never start it (perf does, for its scripting): there is
    // no interpreter to queue on, and Py_AddPendingCall would crash it (it did, after fork).
    // SAFETY: Py_IsInitialized reads one flag of the runtime; it needs no thread state.
    if unsafe { initialized() } == 0 {
        return false;
    }
    // SAFETY: the interpreter's Py_AddPendingCall, which needs no thread state; `f` has the
    // pending-call signature and catches its own panics.
    unsafe { add(f, std::ptr::null_mut()) == 0 }
}

type AddPendingCall =
    unsafe extern "C" fn(extern "C" fn(*mut libc::c_void) -> i32, *mut libc::c_void) -> i32;

/// `Py_AddPendingCall`, resolved at start (not in a fork handler).
static ADD_PENDING_CALL: runtime::Original<AddPendingCall> = runtime::Original::new();
/// `Py_IsInitialized`, resolved with it.
static IS_INITIALIZED: runtime::Original<unsafe extern "C" fn() -> i32> = runtime::Original::new();
