//! Hooks on leaving the process image: `exec*` (write the profile before the image is replaced)
//! and `_exit` (which skips atexit handlers — `os._exit`, multiprocessing children).

use std::ffi::{c_char, c_int};

use std::sync::atomic::Ordering;

use crate::record::writer;
use crate::runtime::{self, ACTIVE, PID};

fn before(reason: &'static str) {
    let saved = runtime::errno();
    runtime::guard((), || before_leaving(reason));
    runtime::set_errno(saved);
}

/// Before exec or `_exit` (and at exit): the process image ends without atexit handlers, so
/// write now — unless this is a vfork child sharing the parent's memory (its pid differs from
/// ours).
pub fn before_leaving(reason: &'static str) {
    if ACTIVE.load(Ordering::Acquire) && PID.load(Ordering::Relaxed) == std::process::id() {
        writer::write_now(reason, true);
    }
}

pub(crate) unsafe extern "C" fn hook_execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    before("exec");
    // SAFETY: unchanged arguments to glibc.
    unsafe { libc::execve(path, argv, envp) }
}

pub(crate) unsafe extern "C" fn hook_execv(
    path: *const c_char,
    argv: *const *const c_char,
) -> c_int {
    before("exec");
    // SAFETY: unchanged arguments to glibc.
    unsafe { libc::execv(path, argv) }
}

pub(crate) unsafe extern "C" fn hook_execvp(
    file: *const c_char,
    argv: *const *const c_char,
) -> c_int {
    before("exec");
    // SAFETY: unchanged arguments to glibc.
    unsafe { libc::execvp(file, argv) }
}

pub(crate) unsafe extern "C" fn hook_execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    before("exec");
    // SAFETY: unchanged arguments to glibc.
    unsafe { libc::execvpe(file, argv, envp) }
}

pub(crate) unsafe extern "C" fn hook_fexecve(
    fd: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    before("exec");
    // SAFETY: unchanged arguments to glibc.
    unsafe { libc::fexecve(fd, argv, envp) }
}

pub(crate) unsafe extern "C" fn hook_exit(status: c_int) -> ! {
    before("exit");
    // SAFETY: unchanged argument to glibc.
    unsafe { libc::_exit(status) }
}
