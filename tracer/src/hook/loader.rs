//! Hooks on the dynamic loader: `dlopen` (so libraries loaded later — `_ctypes`, `_cffi_backend`,
//! the target libraries — get their GOT entries patched as they arrive) and `dlsym` in ctypes and
//! cffi (so a function is named exactly as the program asked for it).

use std::ffi::{c_char, c_int, c_void, CStr};

use crate::agent::{errno, set_errno};

/// `dlopen` as seen by every patched module.
///
/// dlopen is caller-sensitive only through the caller's DT_RPATH/DT_RUNPATH for bare names; the
/// modules we patch (libpython, `_ctypes`, extension modules) load by absolute path or rely on
/// the standard search, which does not depend on the caller.
pub(crate) unsafe extern "C" fn hook_dlopen(file: *const c_char, flags: c_int) -> *mut c_void {
    // SAFETY: the caller's arguments, passed unchanged to glibc's dlopen (our own GOT is never
    // patched, so this reaches the real one).
    let handle = unsafe { libc::dlopen(file, flags) };
    if !handle.is_null() {
        let saved = errno();
        let _ = std::panic::catch_unwind(super::rescan);
        set_errno(saved);
    }
    handle
}

/// `dlsym` as seen by `_ctypes` and `_cffi_backend` (only there: other modules may use
/// RTLD_NEXT, which depends on the caller's identity and cannot be forwarded).
pub(crate) unsafe extern "C" fn hook_dlsym(
    handle: *mut c_void,
    name: *const c_char,
) -> *mut c_void {
    // SAFETY: unchanged arguments to glibc's dlsym.
    let p = unsafe { libc::dlsym(handle, name) };
    if !p.is_null() && !name.is_null() {
        let saved = errno();
        // SAFETY: dlsym's caller passes a NUL-terminated symbol name.
        let n = unsafe { CStr::from_ptr(name) };
        let _ = std::panic::catch_unwind(|| crate::symbols::note_name(p as usize, n));
        set_errno(saved);
    }
    p
}
