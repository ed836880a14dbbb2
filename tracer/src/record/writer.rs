//! The snapshotter: writes the profile atomically every interval, at exit, before exec, and on
//! SIGTERM/SIGINT/SIGHUP (the signal handler only wakes this thread through a pipe — the one thing
//! a handler may safely do — then waits for it, restores the default action and re-raises).
//!
//! Attach's detach ends the thread ([`stop`]); a later session in the same process starts it
//! again after [`reset`], which also lets the new session's final profile be written.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::clock;

/// Serialises writes; held across building and renaming one profile.
static WRITE: Mutex<()> = Mutex::new(());
/// Set once the final profile of this process is written: later periodic writes must not
/// replace a complete profile with a snapshot.
static FINAL_WRITTEN: AtomicBool = AtomicBool::new(false);
static WARNED: AtomicBool = AtomicBool::new(false);
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
static ACK_FD: AtomicI32 = AtomicI32::new(-1);
static RUNNING_PID: AtomicI32 = AtomicI32::new(0);
/// The read end of the wake pipe (the snapshotter polls it).
static WAKE_READ: AtomicI32 = AtomicI32::new(-1);
/// The snapshotter thread, kept so that [`stop`] can end and join it.
static THREAD: Mutex<Option<std::thread::JoinHandle<()>>> = Mutex::new(None);
/// Set by [`stop`]: the snapshotter ends at its next wake-up.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// Set by [`stop`], cleared by [`reset`]: [`start`] does nothing in between.
static HALTED: AtomicBool = AtomicBool::new(false);
/// What [`stop`] writes to the wake pipe; a signal handler writes the signal number (never 0).
const STOP_BYTE: u8 = 0;

const SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];
static PREVIOUS: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];
static PREVIOUS_FLAGS: [AtomicI32; 3] = [const { AtomicI32::new(0) }; 3];

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
    let path = crate::agent::fill_meta(&mut profile, &cal, reason, complete)?;
    match ffiprof_profile::write_atomic(&profile, &path) {
        Ok(()) => {
            if complete {
                FINAL_WRITTEN.store(true, Ordering::Release);
            }
            crate::agent::debug(&format!("wrote {} ({reason})", path.display()));
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
    if !pipes_ready() {
        RUNNING_PID.store(0, Ordering::Release);
        return;
    }
    STOPPING.store(false, Ordering::Release);
    let wake_read = WAKE_READ.load(Ordering::Acquire);
    let ack_write = ACK_FD.load(Ordering::Acquire);
    let spawned = std::thread::Builder::new()
        .name("ffiprof-snapshot".into())
        .spawn(move || loop {
            let mut pfd = libc::pollfd {
                fd: wake_read,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one fd we own.
            let n = unsafe {
                libc::poll(
                    &mut pfd,
                    1,
                    interval.as_millis().min(i32::MAX as u128) as i32,
                )
            };
            if n > 0 {
                let mut b = [0u8; 1];
                // SAFETY: reading one byte into our buffer from our pipe.
                if unsafe { libc::read(wake_read, b.as_mut_ptr().cast(), 1) } != 1 {
                    continue;
                }
                if b[0] == STOP_BYTE {
                    break;
                }
                let _ = std::panic::catch_unwind(|| write_now("signal", true));
                // SAFETY: one byte to the handler waiting on the ack pipe.
                unsafe { libc::write(ack_write, b.as_ptr().cast(), 1) };
            } else if STOPPING.load(Ordering::Acquire) {
                break;
            } else if !FINAL_WRITTEN.load(Ordering::Acquire) {
                let _ = std::panic::catch_unwind(|| write_now("periodic", false));
            }
        });
    match spawned {
        Ok(handle) => *THREAD.lock() = Some(handle),
        Err(_) => RUNNING_PID.store(0, Ordering::Release),
    }
}

/// Creates the wake and ack pipes once per process. They are never closed while the process
/// lives (a signal handler may be about to write to them), and a restarted snapshotter reuses them.
fn pipes_ready() -> bool {
    if WAKE_FD.load(Ordering::Acquire) >= 0 {
        return true;
    }
    let mut fds = [0i32; 2];
    let mut ack = [0i32; 2];
    // SAFETY: pipe2 fills two fds we own; CLOEXEC keeps them out of exec'd programs.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return false;
        }
        if libc::pipe2(ack.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            libc::close(fds[0]);
            libc::close(fds[1]);
            return false;
        }
    }
    WAKE_READ.store(fds[0], Ordering::Release);
    ACK_READ.store(ack[0], Ordering::Release);
    ACK_FD.store(ack[1], Ordering::Release);
    WAKE_FD.store(fds[1], Ordering::Release);
    true
}

/// Ends the snapshotter thread and waits for it (attach's detach). It stays off, even if a call
/// that was in flight at the stop sees a function for the first time, until [`reset`].
pub fn stop() {
    HALTED.store(true, Ordering::Release);
    let Some(handle) = THREAD.lock().take() else {
        return;
    };
    // From here the signal handler no longer waits for this thread's ack.
    RUNNING_PID.store(0, Ordering::Release);
    STOPPING.store(true, Ordering::Release);
    let wake = WAKE_FD.load(Ordering::Acquire);
    if wake >= 0 {
        let b = [STOP_BYTE];
        // SAFETY: one byte into our own pipe; the thread also sees STOPPING at its next period.
        unsafe { libc::write(wake, b.as_ptr().cast(), 1) };
    }
    let _ = handle.join();
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

static ACK_READ: AtomicI32 = AtomicI32::new(-1);

/// After fork: the child has no snapshotter thread and may write a profile of its own.
pub fn forget_after_fork() {
    // SAFETY: paired with fork_prepare, which leaked this guard on this thread.
    unsafe { THREAD.force_unlock() };
    // The thread does not exist in the child: drop nothing of it, never join it.
    std::mem::forget(THREAD.lock().take());
    RUNNING_PID.store(0, Ordering::Release);
    FINAL_WRITTEN.store(false, Ordering::Release);
    WARNED.store(false, Ordering::Release);
    for fd in [&WAKE_FD, &WAKE_READ, &ACK_FD, &ACK_READ] {
        let old = fd.swap(-1, Ordering::AcqRel);
        if old >= 0 {
            // SAFETY: closing the child's copy of a pipe end only this module uses.
            unsafe { libc::close(old) };
        }
    }
    // SAFETY: paired with fork_prepare, which leaked the guard on this thread.
    unsafe { WRITE.force_unlock() };
}

pub(crate) fn fork_prepare() {
    std::mem::forget(WRITE.lock());
    std::mem::forget(THREAD.lock());
}

pub(crate) fn fork_release_parent() {
    // SAFETY: paired with fork_prepare on the same thread, which leaked both guards.
    unsafe {
        THREAD.force_unlock();
        WRITE.force_unlock();
    }
}

extern "C" fn on_signal(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(i) = SIGNALS.iter().position(|s| *s == sig) else {
        return;
    };
    let prev = PREVIOUS[i].load(Ordering::Acquire);
    if prev == libc::SIG_IGN {
        return;
    }
    if prev != libc::SIG_DFL {
        // The program's own handler, installed before us: chain to it.
        if PREVIOUS_FLAGS[i].load(Ordering::Acquire) & libc::SA_SIGINFO != 0 {
            // SAFETY: `prev` was installed with SA_SIGINFO, so it has this signature.
            let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(prev) };
            f(sig, info, ctx);
        } else {
            // SAFETY: a plain handler.
            let f: extern "C" fn(i32) = unsafe { std::mem::transmute(prev) };
            f(sig);
        }
        return;
    }
    // SAFETY: gettid is async-signal-safe.
    if WRITER_TID.load(Ordering::Acquire) == unsafe { libc::gettid() } {
        // This thread holds the write lock (exit or exec was writing the final profile): the
        // snapshotter would wait for it forever. Let the write finish; write_now re-raises.
        PENDING_SIGNAL.store(sig, Ordering::Release);
        return;
    }
    // Default action is to terminate: have the snapshotter write first (async-signal-safe:
    // write, poll, read, sigaction, raise only).
    let wake = WAKE_FD.load(Ordering::Acquire);
    let ack = ACK_READ.load(Ordering::Acquire);
    if wake >= 0 && ack >= 0 && RUNNING_PID.load(Ordering::Acquire) == std::process::id() as i32 {
        let b = [sig as u8];
        // SAFETY: async-signal-safe calls on fds we own.
        unsafe {
            libc::write(wake, b.as_ptr().cast(), 1);
            let mut pfd = libc::pollfd {
                fd: ack,
                events: libc::POLLIN,
                revents: 0,
            };
            if libc::poll(&mut pfd, 1, 3000) > 0 {
                let mut r = [0u8; 1];
                libc::read(ack, r.as_mut_ptr().cast(), 1);
            }
        }
    }
    raise_default(sig);
}

/// Installs the termination handlers, remembering the program's own to chain to.
pub fn install_signal_handlers() {
    for (i, &sig) in SIGNALS.iter().enumerate() {
        // SAFETY: sigaction with a zeroed struct we fill; the handler is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, &sa, &mut old) == 0 {
                if old.sa_sigaction == libc::SIG_IGN {
                    // Ignored signals stay ignored (nohup, background jobs).
                    libc::sigaction(sig, &old, std::ptr::null_mut());
                    PREVIOUS[i].store(libc::SIG_IGN, Ordering::Release);
                } else {
                    PREVIOUS[i].store(old.sa_sigaction, Ordering::Release);
                    PREVIOUS_FLAGS[i].store(old.sa_flags, Ordering::Release);
                }
            }
        }
    }
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
        assert!(WAKE_FD.load(Ordering::Acquire) >= 0, "the pipes stay open");
    }
}
