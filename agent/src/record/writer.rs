//! The snapshotter: writes the profile atomically every interval, at exit, before exec, and on
//! SIGTERM/SIGHUP where the program left their default action (the signal handler only wakes
//! this thread through a futex — what a handler may safely do — then waits for it, restores the
//! default action and re-raises).
//!
//! Invisible to the program: no file descriptor (futex words, not pipes), every signal blocked
//! in the thread (so none meant for the program lands here), the thread ended before every fork
//! and started again after it (CPython 3.12+ counts threads right after `fork`), and the signal
//! handlers installed only over default actions and only after the interpreter has read its
//! dispositions (see [`install_signal_handlers`]).
//!
//! Attach's detach ends the thread ([`stop`]); a later session in the same process starts it
//! again after [`reset`], which also lets the new session's final profile be written.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::clock::{self, Calibration};
use crate::runtime::{debug, guard};

/// What fills a profile's meta and says where to write it (None: do not write), registered by
/// the session, which knows the configuration; called once per write.
pub type FillMeta =
    fn(&mut ffiprof_profile::Profile, &Calibration, &'static str, bool) -> Option<PathBuf>;
static FILL_META: std::sync::OnceLock<FillMeta> = std::sync::OnceLock::new();

/// Registers the session's [`FillMeta`] (once per process); until then nothing is written.
pub fn set_fill_meta(f: FillMeta) {
    let _ = FILL_META.set(f);
}

/// Serialises writes; held across building and renaming one profile.
static WRITE: Mutex<()> = Mutex::new(());
/// Set once the final profile of this process is written: later periodic writes must not
/// replace a complete profile with a snapshot.
static FINAL_WRITTEN: AtomicBool = AtomicBool::new(false);
static WARNED: AtomicBool = AtomicBool::new(false);
static RUNNING_PID: AtomicI32 = AtomicI32::new(0);
/// What wakes the snapshotter before its period ends: a signal number, or [`WAKE_STOP`]. A futex
/// word, not a pipe: the agent holds no file descriptor the program could see.
static WAKE: AtomicU32 = AtomicU32::new(0);
/// Bumped by the snapshotter after a write a signal asked for (the handler waits on it).
static ACK: AtomicU32 = AtomicU32::new(0);
static INTERVAL_MS: AtomicU32 = AtomicU32::new(1000);
/// The snapshotter thread, kept so that [`stop`] can end and join it.
static THREAD: Mutex<Option<std::thread::JoinHandle<()>>> = Mutex::new(None);
/// Set by [`stop`]: the snapshotter ends at its next wake-up.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// Set by [`stop`], cleared by [`reset`]: [`start`] does nothing in between.
static HALTED: AtomicBool = AtomicBool::new(false);
/// What [`stop`] puts in [`WAKE`]; a signal handler puts the signal number.
const WAKE_STOP: u32 = u32::MAX;

const SIGNALS: [i32; 2] = [libc::SIGTERM, libc::SIGHUP];

/// Writes the profile now. Returns where, or None when nothing was written (a non-root
/// process that recorded nothing, or the final profile already written).
pub fn write_now(reason: &'static str, complete: bool) -> Option<PathBuf> {
    let written = {
        let _guard = WRITE.lock();
        // SAFETY: gettid has no preconditions.
        WRITER_TID.store(unsafe { libc::gettid() }, Ordering::Release);
        let written = write_locked(reason, complete);
        WRITER_TID.store(0, Ordering::Release);
        written
    };
    // A terminating signal that arrived while this thread was writing waited for the write to
    // finish (see `on_signal`): deliver it now, as it would have been.
    let sig = PENDING_SIGNAL.swap(0, Ordering::AcqRel);
    if sig != 0 {
        raise_default(sig);
    }
    written
}

/// Restores a signal's default action and raises it: the process ends as it would have without
/// us. Async-signal-safe (sigaction and raise only).
fn raise_default(sig: i32) {
    // SAFETY: a zeroed sigaction with SIG_DFL is a valid default disposition.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &sa, std::ptr::null_mut());
        libc::raise(sig);
    }
}

/// The thread inside `write_now` (0: none), and a terminating signal it received meanwhile.
static WRITER_TID: AtomicI32 = AtomicI32::new(0);
static PENDING_SIGNAL: AtomicI32 = AtomicI32::new(0);

fn write_locked(reason: &'static str, complete: bool) -> Option<PathBuf> {
    if FINAL_WRITTEN.load(Ordering::Acquire) {
        return None;
    }
    let cal = clock::calibrate();
    let mut profile = super::snapshot::build(&cal);
    let path = FILL_META.get()?(&mut profile, &cal, reason, complete)?;
    match ffiprof_profile::write_atomic(&profile, &path) {
        Ok(()) => {
            if complete {
                FINAL_WRITTEN.store(true, Ordering::Release);
            }
            debug(&format!("wrote {} ({reason})", path.display()));
            Some(path)
        }
        Err(e) => {
            if !WARNED.swap(true, Ordering::AcqRel) {
                eprintln!("ffiprof: cannot write the profile, the program continues untraced on disk: {e}");
            }
            None
        }
    }
}

/// Starts the periodic snapshotter of this process (once per pid: a forked child starts its own),
/// unless [`stop`] ended it and no [`reset`] came since.
pub fn start(interval: Duration) {
    if HALTED.load(Ordering::Acquire) {
        return;
    }
    let pid = std::process::id() as i32;
    if RUNNING_PID.swap(pid, Ordering::AcqRel) == pid {
        return;
    }
    INTERVAL_MS.store(
        interval.as_millis().clamp(1, u32::MAX as u128) as u32,
        Ordering::Release,
    );
    STOPPING.store(false, Ordering::Release);
    WAKE.store(0, Ordering::Release);
    let spawned = spawn_agent_thread("ffiprof-snapshot", snapshotter);
    match spawned {
        Ok(handle) => *THREAD.lock() = Some(handle),
        Err(_) => RUNNING_PID.store(0, Ordering::Release),
    }
}

/// The snapshotter thread's body: a periodic write, a write asked for by a terminating signal,
/// or the end.
fn snapshotter() {
    loop {
        let ms = INTERVAL_MS.load(Ordering::Acquire);
        futex_wait(&WAKE, 0, Some(Duration::from_millis(ms as u64)));
        let wake = WAKE.swap(0, Ordering::AcqRel);
        if wake == WAKE_STOP || STOPPING.load(Ordering::Acquire) {
            break;
        }
        if wake != 0 {
            guard(None, || write_now("signal", true));
            ACK.fetch_add(1, Ordering::AcqRel);
            futex_wake(&ACK);
        } else if !FINAL_WRITTEN.load(Ordering::Acquire) {
            guard(None, || write_now("periodic", false));
        }
    }
}

/// Starts one of the agent's own threads with every signal blocked from its first instruction.
/// Process-directed signals must never be delivered to an agent thread: the kernel would pick it
/// whenever the program's own threads block a signal (to `sigwait` for it, say), and the program
/// would see its signal taken — or be killed by its default action — by a thread it does not
/// know. A thread inherits its creator's mask, so the creator blocks everything for the moment
/// of the spawn (blocking in the new thread itself would leave a window before it runs).
pub fn spawn_agent_thread<F: FnOnce() + Send + 'static>(
    name: &str,
    f: F,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    // SAFETY: the calling thread's mask, saved, set to full, and restored below.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        old
    };
    AGENT_THREADS.fetch_add(1, Ordering::Relaxed);
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _counted = Counted;
            f()
        });
    if spawned.is_err() {
        AGENT_THREADS.fetch_sub(1, Ordering::Relaxed);
    }
    // SAFETY: restoring the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    spawned
}

/// The agent's own threads now running (`spawn_agent_thread`'s): the program's threads are the
/// process's less these.
static AGENT_THREADS: AtomicU32 = AtomicU32::new(0);

pub fn agent_threads() -> u32 {
    AGENT_THREADS.load(Ordering::Relaxed)
}

/// Counts an agent thread out when it ends, however it ends.
struct Counted;

impl Drop for Counted {
    fn drop(&mut self) {
        AGENT_THREADS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sleeps while `word` holds `expected`, at most `timeout`. Async-signal-safe (one system call).
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    // SAFETY: FUTEX_WAIT on a live atomic word of ours, with an optional relative timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ts.as_ref()
                .map_or(std::ptr::null(), |t| t as *const libc::timespec),
        );
    }
}

/// Wakes every waiter on `word`. Async-signal-safe (one system call).
pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a live atomic word of ours.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

/// Ends the snapshotter thread and waits for it (attach's detach). It stays off, even if a call
/// that was in flight at the stop sees a function for the first time, until [`reset`].
pub fn stop() {
    HALTED.store(true, Ordering::Release);
    end_thread();
}

/// Ends the snapshotter thread, if there is one, and joins it.
fn end_thread() -> bool {
    let Some(handle) = THREAD.lock().take() else {
        return false;
    };
    // From here the signal handler no longer waits for this thread's ack.
    RUNNING_PID.store(0, Ordering::Release);
    STOPPING.store(true, Ordering::Release);
    WAKE.store(WAKE_STOP, Ordering::Release);
    futex_wake(&WAKE);
    let _ = handle.join();
    true
}

/// Makes the writer ready for a new recording session in the same process (a second attach):
/// the previous session's final profile no longer blocks writes, and the snapshotter may start.
pub fn reset() {
    let _guard = WRITE.lock();
    FINAL_WRITTEN.store(false, Ordering::Release);
    WARNED.store(false, Ordering::Release);
    STOPPING.store(false, Ordering::Release);
    HALTED.store(false, Ordering::Release);
}

/// After fork, in the child (its locks already released): the child has no snapshotter thread
/// and may write a profile of its own.
pub fn forget_after_fork() {
    // A child has only the thread that forked: none of the agent's (the snapshotter ended
    // before the fork; a paused attach worker stayed in the parent).
    AGENT_THREADS.store(0, Ordering::Relaxed);
    RESTART_AFTER_FORK.store(false, Ordering::Release);
    RUNNING_PID.store(0, Ordering::Release);
    FINAL_WRITTEN.store(false, Ordering::Release);
    WARNED.store(false, Ordering::Release);
}

/// Before fork, before [`FORK_LOCKS`] are taken: the snapshotter thread ends first, so that the
/// program forks a process with exactly the threads it made (CPython 3.12+ counts them right
/// after `fork` and warns about any other); [`take_restart_after_fork`] tells the session to
/// bring it back once the program runs on.
pub(crate) fn end_for_fork() {
    let ended = !HALTED.load(Ordering::Acquire) && end_thread();
    RESTART_AFTER_FORK.store(ended, Ordering::Release);
}

/// The locks held across fork (`runtime::ForkHeld`): a write in progress finishes first.
pub(crate) static FORK_LOCKS: [&dyn crate::runtime::ForkHeld; 2] = [&WRITE, &THREAD];

/// Whether the snapshotter was ended for a fork and should start again.
pub(crate) fn take_restart_after_fork() -> bool {
    RESTART_AFTER_FORK.swap(false, Ordering::AcqRel)
}

/// The snapshotter was running when the program forked and ended for it.
static RESTART_AFTER_FORK: AtomicBool = AtomicBool::new(false);

/// The SIGTERM/SIGHUP handler. A signal handler may not allocate, so it has no panic guard:
/// it is made only of operations that cannot panic (atomics, futex and signal calls), which
/// `agent/tests/no_panic_into_c.rs` checks.
extern "C" fn on_signal(sig: i32, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // Only ever installed over a default disposition (see `install_signal_handlers`): the
    // program's own action for this signal is to end, which it does after the profile.
    // SAFETY: gettid is async-signal-safe.
    if WRITER_TID.load(Ordering::Acquire) == unsafe { libc::gettid() } {
        // This thread holds the write lock (exit or exec was writing the final profile): the
        // snapshotter would wait for it forever. Let the write finish; write_now re-raises.
        PENDING_SIGNAL.store(sig, Ordering::Release);
        return;
    }
    // Have the snapshotter write first (async-signal-safe: atomics and futex calls only).
    if RUNNING_PID.load(Ordering::Acquire) == std::process::id() as i32 {
        let ack = ACK.load(Ordering::Acquire);
        WAKE.store(sig as u32, Ordering::Release);
        futex_wake(&WAKE);
        // At most 3 s, in 10 ms waits.
        for _ in 0..300 {
            if ACK.load(Ordering::Acquire) != ack {
                break;
            }
            futex_wait(&ACK, ack, Some(Duration::from_millis(10)));
        }
    }
    raise_default(sig);
}

/// Installs the termination handlers where the program left the default action, once per
/// process, late: after the interpreter has read every disposition into its own table (so
/// `signal.getsignal` reports what the program set, as untraced), at the first call recorded.
/// SIGINT is never touched: CPython installs its own handler where it finds the default, and
/// a KeyboardInterrupt ends the program through finalization, which writes the profile.
/// A signal the program handles or ignores is left alone (its handler decides; an exit through
/// Python writes the profile at exit).
pub fn install_signal_handlers() {
    let pid = std::process::id() as i32;
    if HANDLERS_PID.swap(pid, Ordering::AcqRel) == pid {
        return;
    }
    for sig in SIGNALS {
        // SAFETY: sigaction queries and sets with zeroed structs we fill; the handler is
        // async-signal-safe.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0
                || old.sa_sigaction != libc::SIG_DFL
            {
                // The program's own (or ours, inherited across fork): leave it.
                continue;
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The process whose handlers are installed (a forked child inherits them and checks again).
static HANDLERS_PID: AtomicI32 = AtomicI32::new(0);

/// Whether `sig` is one the agent may have put its handler on (see `hook::signals`).
pub fn handles(sig: i32) -> bool {
    SIGNALS.contains(&sig) && HANDLERS_PID.load(Ordering::Acquire) != 0
}

/// Whether a disposition's handler address is the agent's.
pub fn is_agent_handler(handler: usize) -> bool {
    handler == on_signal as *const () as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
            .filter(|c| c.starts_with("ffiprof-snap"))
            .count()
    }

    /// Snapshotter threads alive, waiting a moment for a new one to name itself.
    fn snapshot_threads() -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while count() == 0
            && RUNNING_PID.load(Ordering::Acquire) != 0
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        count()
    }

    #[test]
    fn snapshotter_stops_stays_off_and_starts_again_after_reset() {
        let period = Duration::from_millis(5);
        start(period);
        assert_eq!(snapshot_threads(), 1);
        stop();
        assert_eq!(snapshot_threads(), 0, "stop joins the thread");
        start(period);
        assert_eq!(
            snapshot_threads(),
            0,
            "a late start after stop does nothing"
        );
        reset();
        start(period);
        assert_eq!(snapshot_threads(), 1);
        stop();
        assert_eq!(snapshot_threads(), 0);
    }
}
