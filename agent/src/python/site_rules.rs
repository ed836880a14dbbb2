//! Which frames are not call sites. A call made in such a "pass-through" frame is attributed to
//! the first frame up the stack that is not one (several may be skipped); the frame itself stays
//! in the sampled stacks, and the site records it as `through`.
//!
//! Each rule is decided once per interned position (code object, instruction), the first time it
//! is seen, from the code object alone — never from what the frame has been seen calling, which
//! would misattribute the calls made before the decision. So counts per site are exact from the
//! first call, and the hot path pays one bit test for an ordinary call.
//!
//! - **Generic forwarders**: the frame's function takes `*args` or `**kwargs` (`CO_VARARGS` /
//!   `CO_VARKEYWORDS`) and the instruction making the call is `CALL_FUNCTION_EX`
//!   (`f(*args, **kwargs)`): llvmlite's `_lib_fn_wrapper.__call__`, a decorator's `wrapper`. A
//!   helper with named parameters (`def add(a, b): return lib.add(a, b)`) is not one.
//! - **ctypes' own code**: `ctypes/__init__.py`, whose `cast`, `string_at` and `wstring_at` call
//!   foreign functions of `_ctypes` for the user's line.
//! - **`--site-skip GLOB`**: frames whose file path, or `file:function`, matches one of the
//!   patterns (`function` as the profile names it: the qualified name on 3.11+).

use std::sync::atomic::{AtomicBool, Ordering};

use ffiprof_profile::Frame;
use parking_lot::Mutex;

use super::api::{Api, PyBuffer};

/// `--site-skip` patterns in force, with their text (to tell a change).
static SKIP: Mutex<Vec<(String, glob::Pattern)>> = Mutex::new(Vec::new());

/// Replaces the `--site-skip` patterns (invalid ones are left out; the CLI refuses them first).
/// Returns whether they changed.
pub fn set_skip_patterns(patterns: &[String]) -> bool {
    let new: Vec<(String, glob::Pattern)> = patterns
        .iter()
        .filter_map(|p| Some((p.clone(), glob::Pattern::new(p).ok()?)))
        .collect();
    let mut skip = SKIP.lock();
    let changed = skip.iter().map(|(t, _)| t).ne(new.iter().map(|(t, _)| t));
    *skip = new;
    changed
}

/// Whether a frame is passed through by name: ctypes' own module, or a `--site-skip` pattern.
pub fn skipped_by_name(frame: &Frame) -> bool {
    if frame.file.ends_with("/ctypes/__init__.py") {
        return true;
    }
    let skip = SKIP.lock();
    if skip.is_empty() {
        return false;
    }
    let qualified = format!("{}:{}", frame.file, frame.function);
    skip.iter()
        .any(|(_, p)| p.matches(&frame.file) || p.matches(&qualified))
}

/// `CALL_FUNCTION_EX` in the interpreter's own numbering (`opcode.opmap`, checked on 3.8–3.14).
fn call_function_ex(minor: u32) -> u8 {
    match minor {
        14.. => 4,
        13 => 54,
        _ => 142,
    }
}

const CO_VARARGS: isize = 0x04;
const CO_VARKEYWORDS: isize = 0x08;

/// Whether the call at byte `offset` of `code` is a generic forwarder's: the function takes
/// `*args`/`**kwargs` and the instruction there is `CALL_FUNCTION_EX`. Read from `co_flags` and
/// `co_code` (the unspecialised, uninstrumented bytecode), once per position.
///
/// # Safety
/// GIL held; `code` a live code object.
pub unsafe fn is_forwarder(api: &Api, code: usize, offset: usize) -> bool {
    // SAFETY: per the contract; every new reference is released and every error cleared.
    unsafe {
        let flags = (api.getattr)(code as *mut _, c"co_flags".as_ptr());
        if flags.is_null() {
            (api.err_clear)();
            return false;
        }
        let f = (api.long_as_ssize)(flags);
        (api.decref)(flags);
        if f == -1 {
            (api.err_clear)();
            return false;
        }
        if f & (CO_VARARGS | CO_VARKEYWORDS) == 0 {
            return false;
        }
        let bytes = (api.getattr)(code as *mut _, c"co_code".as_ptr());
        if bytes.is_null() {
            (api.err_clear)();
            return false;
        }
        let mut view: PyBuffer = std::mem::zeroed();
        let mut op = None;
        if (api.get_buffer)(bytes, &mut view, 0) == 0 {
            if offset < view.len.max(0) as usize {
                op = Some(*(view.buf as *const u8).add(offset));
            }
            (api.release_buffer)(&mut view);
        } else {
            (api.err_clear)();
        }
        (api.decref)(bytes);
        op == Some(call_function_ex(api.layout.minor))
    }
}

static CTYPES_NAMED: AtomicBool = AtomicBool::new(false);
/// The addresses of ctypes' own foreign functions (`cast`, `string_at`, `wstring_at`).
static CTYPES_INTERNAL: [std::sync::atomic::AtomicUsize; 3] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; 3];

/// Whether `address` (the C function a ctypes foreign function object calls) is one of ctypes'
/// own functions: its arguments are ctypes' business, not bytes crossing to a library, and
/// reading them can cost more than the call (numpy's `_as_parameter_` builds objects).
#[inline(always)]
pub fn is_ctypes_internal(address: usize) -> bool {
    address != 0
        && CTYPES_INTERNAL
            .iter()
            .any(|a| a.load(Ordering::Relaxed) == address)
}

/// Names ctypes' own foreign functions by the addresses `_ctypes` publishes (`_cast_addr`, ...),
/// once: they are static functions, which a stripped `_ctypes` (Debian's) has no symbol for.
///
/// # Safety
/// GIL held, and `_ctypes` already imported (a ctypes function is being called).
pub unsafe fn name_ctypes_internals(api: &Api) {
    if CTYPES_NAMED.swap(true, Ordering::Relaxed) {
        return;
    }
    // SAFETY: per the contract (the import is a look-up in sys.modules); new references are
    // released and errors cleared.
    unsafe {
        let module = (api.import_module)(c"_ctypes".as_ptr());
        if module.is_null() {
            (api.err_clear)();
            return;
        }
        for (i, (attr, name)) in [
            (c"_cast_addr", c"cast"),
            (c"_string_at_addr", c"string_at"),
            (c"_wstring_at_addr", c"wstring_at"),
        ]
        .into_iter()
        .enumerate()
        {
            let addr = (api.getattr)(module, attr.as_ptr());
            if addr.is_null() {
                (api.err_clear)();
                continue;
            }
            let value = (api.long_as_ssize)(addr);
            (api.decref)(addr);
            if value > 0 {
                CTYPES_INTERNAL[i].store(value as usize, Ordering::Relaxed);
                crate::symbols::note_name(value as usize, name);
            } else {
                (api.err_clear)();
            }
        }
        (api.decref)(module);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(file: &str, function: &str) -> Frame {
        Frame {
            file: file.into(),
            function: function.into(),
            line: 1,
        }
    }

    #[test]
    fn skip_patterns_match_the_path_or_file_and_function() {
        assert!(skipped_by_name(&frame(
            "/usr/lib/python3.11/ctypes/__init__.py",
            "cast"
        )));
        assert!(set_skip_patterns(&["*/helpers.py".into(), "*:add".into()]));
        assert!(!set_skip_patterns(&["*/helpers.py".into(), "*:add".into()]));
        assert!(skipped_by_name(&frame("/app/helpers.py", "scale")));
        assert!(skipped_by_name(&frame("/app/main.py", "add")));
        assert!(!skipped_by_name(&frame("/app/main.py", "add_all")));
        assert!(!skipped_by_name(&frame("/app/main.py", "work")));
        assert!(set_skip_patterns(&[]));
        assert!(!skipped_by_name(&frame("/app/main.py", "add")));
    }
}
