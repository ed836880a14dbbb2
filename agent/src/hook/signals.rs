//! The program's view of its signal dispositions. Where the agent put its SIGTERM/SIGHUP handler
//! over a default action (`record::writer`), `sigaction` and `signal` — called from any patched
//! module, or through a pointer `dlsym` handed to ctypes or cffi — report the default action, as
//! untraced, and a program that sets the default keeps the agent's handler in place (the signal
//! still ends it, after the profile is written). A program that installs its own handler, or
//! ignores the signal, takes the signal over: the agent steps aside.

use std::ffi::{c_int, CStr};

use crate::record::writer;

/// Whether the kernel currently runs the agent's handler for `sig`.
fn ours_now(sig: c_int) -> bool {
    if !writer::handles(sig) {
        return false;
    }
    // SAFETY: a query into a zeroed sigaction we own.
    unsafe {
        let mut cur: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut cur) == 0
            && writer::is_agent_handler(cur.sa_sigaction)
    }
}

/// `sigaction` as the program sees it.
///
/// # Safety
/// As `sigaction(2)`: `act` and `old` are null or valid.
pub(crate) unsafe extern "C" fn hook_sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    let saved = crate::runtime::errno();
    let ours = crate::runtime::guard(false, || ours_now(sig));
    crate::runtime::set_errno(saved);
    // SAFETY: the caller's arguments, per the contract.
    unsafe {
        if !ours {
            return libc::sigaction(sig, act, old);
        }
        if !act.is_null() && (*act).sa_sigaction != libc::SIG_DFL {
            // The program's own handler, or SIG_IGN: it takes the signal over.
            let r = libc::sigaction(sig, act, old);
            if r == 0 && !old.is_null() {
                *old = std::mem::zeroed();
            }
            return r;
        }
        // A query, or the default the program already sees: the agent's handler stays.
        if !old.is_null() {
            *old = std::mem::zeroed();
        }
        0
    }
}

/// `signal` as the program sees it.
///
/// # Safety
/// As `signal(2)`.
pub(crate) unsafe extern "C" fn hook_signal(
    sig: c_int,
    handler: libc::sighandler_t,
) -> libc::sighandler_t {
    let saved = crate::runtime::errno();
    let ours = crate::runtime::guard(false, || ours_now(sig));
    crate::runtime::set_errno(saved);
    if ours && handler == libc::SIG_DFL {
        return libc::SIG_DFL;
    }
    // SAFETY: the caller's arguments.
    let old = unsafe { libc::signal(sig, handler) };
    if writer::is_agent_handler(old) {
        libc::SIG_DFL
    } else {
        old
    }
}

/// What `dlsym` should hand the program instead of `p` for `name`, if anything.
pub(crate) fn replacement_for(name: &CStr, p: usize) -> Option<usize> {
    match name.to_bytes() {
        b"sigaction" if p == libc::sigaction as *const () as usize => {
            Some(hook_sigaction as *const () as usize)
        }
        b"signal" if p == libc::signal as *const () as usize => {
            Some(hook_signal as *const () as usize)
        }
        _ => None,
    }
}
