//! Hooks on leaving the process image: `exec*` (write the profile before the image is replaced)
//! and `_exit` (which skips atexit handlers — `os._exit`, multiprocessing children).

use std::ffi::{c_char, c_int};

fn before(reason: &'static str) {
    let saved = crate::agent::errno();
    let _ = std::panic::catch_unwind(|| crate::agent::before_leaving(reason));
    crate::agent::set_errno(saved);
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
