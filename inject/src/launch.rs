//! What the CLI needs from the OS to launch a traced program and leave exactly as it did: safe
//! wrappers, so that unsafe code stays in this crate.

use std::sync::atomic::{AtomicI32, Ordering};

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: i32) {
    let pid = CHILD.load(Ordering::Acquire);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; pid is our own child.
        unsafe { libc::kill(pid, sig) };
    }
}

/// While `pid` runs: Ctrl-C and Ctrl-\ reach it from the terminal, not us (we wait for it to
/// finish and still print the summary), and SIGTERM/SIGHUP sent to us are passed on to it.
pub fn supervise(pid: u32) {
    CHILD.store(pid as i32, Ordering::Release);
    // SAFETY: installing SIG_IGN and an async-signal-safe handler.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, forward as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, forward as *const () as libc::sighandler_t);
    }
}

/// Ends this process by `sig`, as the traced program ended, so our parent sees the same status.
pub fn die_by_signal(sig: i32) -> ! {
    // SAFETY: restoring the default action and raising; if the signal does not kill us, exit with
    // the shell's convention.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    std::process::exit(128 + sig)
}

/// This process's real user id.
pub fn current_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}
