//! Hooks on the dynamic loader: `dlopen` (so libraries loaded later — `_ctypes`, `_cffi_backend`,
//! the target libraries — get their GOT entries patched as they arrive) and `dlsym` in ctypes and
//! cffi (so a function is named exactly as the program asked for it).
//!
//! Both are *caller-sensitive*: glibc reads its own return address (`RETURN_ADDRESS (0)`) to find
//! the calling object, and searches that object's RPATH/RUNPATH and `$ORIGIN` for a bare library
//! name (`dlopen`), or its scope for `RTLD_DEFAULT`/`RTLD_NEXT` (`dlsym`). A hook that simply
//! called glibc would make the agent the caller: a library that loads a plugin shipped beside it
//! (its RUNPATH `$ORIGIN`) would no longer find it (PySDL2's SDL2_image lost libtiff and libwebp).
//!
//! So the hooks are small assembly trampolines that keep the caller: they ask
//! [`gadget_for`] for the address of a `ret` byte (0xC3) inside the caller's own executable segment,
//! push our continuation and then that address, and *jump* to glibc. glibc sees a return address
//! inside the caller's object and behaves exactly as untraced; its `ret` lands on the caller's
//! `ret` byte, which returns once more — into our continuation, which does the after-work
//! (rescan, naming) and returns to the real caller. A caller outside every object (JIT code) gets
//! a `ret` on an anonymous page of ours, which glibc also finds in no object, as it would the
//! caller's own address. (Any byte 0xC3 decodes as `ret` when jumped to; this needs no shadow
//! stack, which glibc 2.36 does not enable.)

use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::runtime::{errno, guard, set_errno};

/// glibc's `dlopen` and `dlsym`, jumped to by the trampolines (set by [`prepare`]).
static REAL_DLOPEN: AtomicUsize = AtomicUsize::new(0);
static REAL_DLSYM: AtomicUsize = AtomicUsize::new(0);
/// A `ret` on an anonymous executable page: the return address for callers in no object.
static ANON_RET: AtomicUsize = AtomicUsize::new(0);

/// Resolves what the trampolines jump to and maps the anonymous `ret`. Idempotent. Returns false
/// when the hooks cannot be used (then the GOT entries are left alone).
pub(crate) fn prepare() -> bool {
    if REAL_DLOPEN.load(Ordering::Acquire) != 0 {
        return true;
    }
    if ANON_RET.load(Ordering::Acquire) == 0 {
        // SAFETY: a fresh private anonymous page we own; written while writable, then made
        // read+execute. Failure leaves nothing mapped and is reported as false.
        unsafe {
            let page = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if page == libc::MAP_FAILED {
                return false;
            }
            *(page as *mut u8) = 0xC3;
            if libc::mprotect(page, 4096, libc::PROT_READ | libc::PROT_EXEC) != 0 {
                libc::munmap(page, 4096);
                return false;
            }
            ANON_RET.store(page as usize, Ordering::Release);
        }
    }
    // Our own references to glibc's functions: the agent's GOT is never patched.
    REAL_DLSYM.store(libc::dlsym as *const () as usize, Ordering::Release);
    REAL_DLOPEN.store(libc::dlopen as *const () as usize, Ordering::Release);
    true
}

/// The GOT replacement for `dlopen` (every patched module).
pub(crate) fn dlopen_hook() -> usize {
    ffiprof_dlopen_trampoline as *const () as usize
}

/// The GOT replacement for `dlsym` (`_ctypes` and `_cffi_backend`).
pub(crate) fn dlsym_hook() -> usize {
    ffiprof_dlsym_trampoline as *const () as usize
}

/// The GOT replacement for `dlsym` in the modules `hook::native` patches: a target's function
/// is handed out as its thunk.
pub(crate) fn dlsym_native_hook() -> usize {
    ffiprof_dlsym_native_trampoline as *const () as usize
}

extern "C" {
    fn ffiprof_dlopen_trampoline();
    fn ffiprof_dlsym_trampoline();
    fn ffiprof_dlsym_native_trampoline();
}

// The two trampolines, one macro body. On entry [rsp] is the caller's return address R, rdi and
// rsi the two arguments, rsp ≡ 8 (mod 16). Stack while glibc runs, top first:
//   gadget (glibc's return address) · continuation · saved rsi · saved rdi · R
// so glibc is entered with rsp ≡ 8 as after a call. The continuation runs with rsp at "saved rsi",
// calls the after-work as after(result, rdi, rsi), and returns what that returns to R with the
// stack as on entry.
macro_rules! caller_preserving_trampoline {
    ($name:literal, $real:path, $after:path) => {
        std::arch::global_asm!(
            concat!(".pushsection .text.", $name, ",\"ax\",@progbits"),
            concat!(".globl ", $name),
            concat!(".hidden ", $name),
            concat!(".type ", $name, ",@function"),
            concat!($name, ":"),
            "push rdi",
            "push rsi",
            "sub rsp, 8",
            "mov rdi, [rsp + 24]",
            "call {gadget}",
            "add rsp, 8",
            "pop rsi",
            "pop rdi",
            "push rdi",
            "push rsi",
            "lea r11, [rip + 2f]",
            "push r11",
            "push rax",
            "jmp qword ptr [rip + {real}]",
            "2:",
            "mov rdx, [rsp]",
            "mov rsi, [rsp + 8]",
            "mov rdi, rax",
            "sub rsp, 8",
            "call {after}",
            "add rsp, 24",
            "ret",
            concat!(".size ", $name, ", . - ", $name),
            ".popsection",
            gadget = sym gadget_for,
            real = sym $real,
            after = sym $after,
        );
    };
}

caller_preserving_trampoline!("ffiprof_dlopen_trampoline", REAL_DLOPEN, after_dlopen);
caller_preserving_trampoline!("ffiprof_dlsym_trampoline", REAL_DLSYM, after_dlsym);
caller_preserving_trampoline!(
    "ffiprof_dlsym_native_trampoline",
    REAL_DLSYM,
    after_dlsym_native
);

/// Where glibc should "return": a `ret` byte in the executable segment of the object holding
/// `caller` (the nearest one after it, else before it), or the anonymous `ret` when no object
/// holds it. Called from the trampolines before glibc runs; takes the loader's read lock only
/// (`dl_iterate_phdr`), allocates nothing and leaves errno alone.
extern "C" fn gadget_for(caller: usize) -> usize {
    struct Search {
        caller: usize,
        found: usize,
    }
    unsafe extern "C" fn callback(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> i32 {
        // SAFETY: dl_iterate_phdr passes a valid info for the duration of the call, and `data`
        // is the &mut Search below; nothing here calls back into the loader.
        let (info, s) = unsafe { (&*info, &mut *(data as *mut Search)) };
        guard(1, || search(info, s))
    }
    /// Fills `s.found` if `info` holds the caller; 1 stops the iteration.
    fn search(info: &libc::dl_phdr_info, s: &mut Search) -> i32 {
        for i in 0..info.dlpi_phnum as usize {
            // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type != libc::PT_LOAD || ph.p_flags & libc::PF_X == 0 {
                continue;
            }
            let lo = info.dlpi_addr as usize + ph.p_vaddr as usize;
            let hi = lo + ph.p_filesz as usize;
            if s.caller < lo || s.caller >= hi {
                continue;
            }
            // SAFETY: [lo, hi) is this object's mapped, readable and executable file image.
            let bytes = unsafe { std::slice::from_raw_parts(lo as *const u8, hi - lo) };
            let at = s.caller - lo;
            s.found = bytes[at..]
                .iter()
                .position(|b| *b == 0xC3)
                .map(|p| lo + at + p)
                .or_else(|| bytes[..at].iter().rposition(|b| *b == 0xC3).map(|p| lo + p))
                .unwrap_or(0);
            return 1;
        }
        0
    }
    let result = guard(0, || {
        let mut s = Search { caller, found: 0 };
        // SAFETY: the callback only reads the loader's structures and writes `s`.
        unsafe { libc::dl_iterate_phdr(Some(callback), &mut s as *mut Search as *mut c_void) };
        s.found
    });
    if result != 0 {
        result
    } else {
        ANON_RET.load(Ordering::Acquire)
    }
}

/// After glibc's `dlopen` returned `handle`: patch whatever it loaded. Returns `handle`.
extern "C" fn after_dlopen(handle: *mut c_void, _file: usize, _flags: usize) -> *mut c_void {
    if !handle.is_null() {
        let saved = errno();
        guard((), super::rescan);
        set_errno(saved);
    }
    handle
}

/// After glibc's `dlsym(handle, name)` returned `p`: remember the name the program asked for.
/// Returns what the program gets: `p`, or for `sigaction`/`signal` the agent's views of them
/// (`hook::signals`), so that ctypes code asking the C library about a signal sees what it
/// would untraced.
extern "C" fn after_dlsym(p: *mut c_void, _handle: usize, name: *const c_char) -> *mut c_void {
    if p.is_null() || name.is_null() {
        return p;
    }
    let saved = errno();
    // SAFETY: dlsym's caller passes a NUL-terminated symbol name.
    let n = unsafe { CStr::from_ptr(name) };
    let out = guard(p as usize, || {
        crate::symbols::note_name(p as usize, n);
        super::signals::replacement_for(n, p as usize).unwrap_or(p as usize)
    });
    set_errno(saved);
    out as *mut c_void
}

/// After glibc's `dlsym` returned `p` to a module `hook::native` patched: a target's function
/// goes out as its thunk, so that calls through the pointer are seen.
extern "C" fn after_dlsym_native(p: *mut c_void, _handle: usize, _name: usize) -> *mut c_void {
    if p.is_null() {
        return p;
    }
    let saved = errno();
    let out = guard(p as usize, || super::native::thunk_for_pointer(p as usize));
    set_errno(saved);
    out as *mut c_void
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gadget_of_a_caller_is_a_ret_in_its_own_object() {
        assert!(prepare());
        let me = the_gadget_of_a_caller_is_a_ret_in_its_own_object as *const () as usize;
        let g = gadget_for(me);
        assert_ne!(g, ANON_RET.load(Ordering::Acquire));
        // SAFETY: g points into our own text segment.
        assert_eq!(unsafe { *(g as *const u8) }, 0xC3);
        let heap = Box::new(0u8);
        assert_eq!(
            gadget_for(&*heap as *const u8 as usize),
            ANON_RET.load(Ordering::Acquire),
            "an address in no object gets the anonymous ret"
        );
    }

    #[test]
    fn trampolines_behave_as_dlopen_and_dlsym() {
        assert!(prepare());
        type Open = unsafe extern "C" fn(*const c_char, i32) -> *mut c_void;
        type Sym = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;
        // SAFETY: the trampolines have exactly dlopen's and dlsym's signatures.
        unsafe {
            let open: Open = std::mem::transmute(dlopen_hook());
            let sym: Sym = std::mem::transmute(dlsym_hook());
            let h = open(c"libm.so.6".as_ptr(), libc::RTLD_NOW);
            assert!(!h.is_null());
            let cos = sym(h, c"cos".as_ptr());
            assert_eq!(cos, libc::dlsym(h, c"cos".as_ptr()));
            assert!(sym(h, c"no_such_symbol_here".as_ptr()).is_null());
            assert!(
                !libc::dlerror().is_null(),
                "a failed dlsym leaves its error"
            );
            assert!(open(c"libno-such-library.so".as_ptr(), libc::RTLD_NOW).is_null());
            libc::dlclose(h);
        }
    }
}
