//! The lean path of a bracketed builtin's call in assembly, for the interpreter layout whose
//! position it reads with fixed offsets (CPython 3.11: the thread state in one cell of
//! `_PyRuntime`, the frame two loads from it, the position a pointer into the code object's
//! bytecode). For an untimed repeat of the thread's last call that takes no stack and whose
//! arguments refer to no bytes it does exactly what [`lean::finish`](super::lean::finish) does
//! — the same counts, the same lean context pushed — with one word on the stack, and finds the
//! thread's state by one compare of [`LEAN_THREAD`]'s owner with the thread pointer instead of
//! the recorders' table. Any other repeat (a stack sample, a timed call, an argument that may
//! refer to bytes) it sends to `lean::finish` with the state and statistics it found
//! (`builtin_call::lean_repeat`); anything else (another thread, another position, a nested
//! repeat) to the Rust wrapper, which handles every case (and notes its thread in
//! [`LEAN_THREAD`] when it takes its own lean path). Both before it has changed anything, with
//! the call's registers as they came.
//!
//! Why assembly: the Rust wrapper holds the bracket and the lean path in one function, and pays
//! the whole bracket's frame (six saved registers, a spill area) and the layout's generic reads
//! (branches on the version) on every call; the loop the issue measures (`bench-overhead --ext`)
//! spent most of its added instructions there.
//!
//! It is chosen per process in [`enable`], and per object by `builtin_call::wrapper_for` (an
//! object with a vectorcall of its own, in a module that is not a target itself); elsewhere the
//! objects' vectorcall is the Rust wrapper.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::{Bracketed, Vectorcall, CF_ML, DESCR_METHOD};
use crate::python::api::Api;
use crate::record::call_ctx::{lean_offsets as ts, CallCtx, ARG_SLOTS, LEAN_THREAD};
use crate::record::recorder::CallStats;
use std::mem::offset_of;

/// What the assembly reads of the interpreter, set by [`enable`]: the cell holding the current
/// thread state, `None`, and the types of arguments that refer to no bytes (float, int, bool).
static STATICS: [AtomicUsize; 5] = [const { AtomicUsize::new(0) }; 5];
const S_TSTATE_CELL: usize = 0;
const S_NONE: usize = 8;
const S_FLOAT: usize = 16;
const S_LONG: usize = 24;
const S_BOOL: usize = 32;

/// The assembly path is in use in this process.
static ON: AtomicBool = AtomicBool::new(false);

/// CPython 3.11's layout, which the assembly has built in: `PyThreadState.cframe`,
/// `_PyCFrame.current_frame`, `_PyInterpreterFrame.f_code` and `.prev_instr`.
const TS_CFRAME: usize = 56;
const CF_CURRENT_FRAME: usize = 8;
const F_CODE: usize = 32;
const F_PREV_INSTR: usize = 56;

/// Chooses the assembly path when the interpreter's layout is the one it has built in and its
/// thread state is read from a cell (3.11; the Python API `api` resolved). Before any object is
/// bracketed.
pub(super) fn enable(api: &Api) -> bool {
    let l = &api.layout;
    let fits = l.minor == 11
        && l.ts_frame == TS_CFRAME
        && l.cframe_current == Some(CF_CURRENT_FRAME)
        && l.f_code == F_CODE
        && l.f_ip == F_PREV_INSTR
        && l.f_owner.is_some()
        && api.tstate_cell != 0
        && !cfg!(feature = "floor-probe");
    if fits {
        for (i, v) in [
            api.tstate_cell,
            api.none,
            api.float_type,
            api.long_type,
            api.bool_type,
        ]
        .into_iter()
        .enumerate()
        {
            STATICS[i].store(v, Ordering::Relaxed);
        }
    }
    ON.store(fits, Ordering::Release);
    fits
}

extern "C" {
    fn ffiprof_lean_cfunction(
        callable: *mut super::PyObject,
        args: *const *mut super::PyObject,
        nargsf: usize,
        kwnames: *mut super::PyObject,
    ) -> *mut super::PyObject;
    fn ffiprof_lean_descr(
        callable: *mut super::PyObject,
        args: *const *mut super::PyObject,
        nargsf: usize,
        kwnames: *mut super::PyObject,
    ) -> *mut super::PyObject;
}

/// The assembly wrapper for objects whose def pointer is at `def_at`, when it is in use.
pub(super) fn wrapper(def_at: usize) -> Option<Vectorcall> {
    if !ON.load(Ordering::Acquire) {
        return None;
    }
    Some(if def_at == CF_ML {
        ffiprof_lean_cfunction as Vectorcall
    } else {
        ffiprof_lean_descr as Vectorcall
    })
}

/// Whether `vectorcall` is one of the assembly wrappers.
pub(super) fn is_wrapper(vectorcall: usize) -> bool {
    vectorcall == ffiprof_lean_cfunction as *const () as usize
        || vectorcall == ffiprof_lean_descr as *const () as usize
}

/// One wrapper: `$name`, reading the def at `$def_at`, sending a repeat it does not make to
/// `$repeat` and anything else to `$full`.
macro_rules! lean_wrapper {
    ($name:literal, $def_at:expr, $full:path, $repeat:path) => {
        std::arch::global_asm!(
            concat!(".pushsection .text.", $name, ",\"ax\",@progbits"),
            ".p2align 4",
            concat!(".globl ", $name),
            concat!(".hidden ", $name),
            concat!(".type ", $name, ",@function"),
            concat!($name, ":"),
            ".cfi_startproc",
            // On entry: rdi callable, rsi args, rdx nargsf, rcx kwnames (kept as they are until
            // the call or the fallback); rax, r8-r11 are free.
            "mov r8, qword ptr [rdi + {def_at}]",
            // The thread's state: the noted one, if it is this thread's (none is noted while
            // recording is off: `ThreadState::note_lean_thread`).
            // (Never null: a stand-in whose owner no thread is.)
            "mov rax, qword ptr [rip + {lean_thread}]",
            "mov r9, qword ptr fs:0",
            "cmp r9, qword ptr [rax + {ts_owner}]",
            "jne 9f",
            // No lean context pushed already (a nested repeat).
            "cmp qword ptr [rax + {ts_lean_expect}], 0",
            "jne 9f",
            // The position: thread state → cframe → frame → prev_instr.
            // (The thread state is not null: the interpreter called us, the GIL is held.)
            "mov r9, qword ptr [rip + {statics} + {s_tstate_cell}]",
            "mov r9, qword ptr [r9]",
            "mov r9, qword ptr [r9 + {ts_cframe}]",
            "mov r9, qword ptr [r9 + {cf_current}]",
            "test r9, r9",
            "je 9f",
            // The instruction alone: in 3.11 it points into its code object's own bytecode
            // (`co_code_adaptive`), so it names the code object too — as the (code, instruction)
            // pair the Rust paths compare does, no more and no less: both rest on a position's
            // code object not being freed while it is the thread's last call.
            "mov r10, qword ptr [r9 + {f_ip}]",
            "cmp r10, qword ptr [rax + {ts_last_ip}]",
            "jne 9f",
            // The thread's last call (its statistics are set with its position: not null), of
            // this function: from here on a repeat, which `lean::finish` makes when it is not
            // the plain one below (rax the thread's state, r9 the statistics).
            "mov r9, qword ptr [rax + {ts_last_stats}]",
            "mov r10, qword ptr [r8 + {b_key}]",
            "cmp r10, qword ptr [r9 + {st_function}]",
            "jne 9f",
            // No stack sample next, not timed this time.
            "cmp dword ptr [rax + {ts_stack_countdown}], 1",
            "jbe 8f",
            "cmp dword ptr [r9 + {st_countdown}], 1",
            "jbe 8f",
            // (Only an object with a vectorcall of its own gets this wrapper: not null.)
            "mov r10, qword ptr [r8 + {b_vectorcall}]",
            // Arguments: each a number, a bool or None (bytes 0), else `lean::finish` counts them.
            // (Their number is nargsf's low half: the flag is its top bit.)
            "test edx, edx",
            "jnz 5f",
            // Committed: what `lean::repeat` files and pushes.
            "4:",
            "dec dword ptr [rax + {ts_stack_countdown}]",
            "dec dword ptr [r9 + {st_countdown}]",
            "inc qword ptr [r9 + {st_calls}]",
            "inc qword ptr [r9 + {st_python_calls}]",
            "mov qword ptr [rax + {ts_lean_expect}], r9",
            // The site, then `native_via_got` set and the other flags of that word clear (only a
            // builtin whose native part the GOT trampoline times gets this wrapper), one store.
            "mov r11d, dword ptr [r9 + {st_site}]",
            "bts r11, {via_got_bit}",
            "mov qword ptr [rax + {ts_lean_site}], r11",
            // Pushed: the outer call in progress aside in the thread's state, the state's address
            // on the stack (one word: the callee finds the stack aligned).
            "mov r11, qword ptr [rax + {ts_ctx}]",
            "mov qword ptr [rax + {ts_lean_outer}], r11",
            "lea r11, [rax + {ts_lean}]",
            "mov qword ptr [rax + {ts_ctx}], r11",
            "push rax",
            ".cfi_adjust_cfa_offset 8",
            "call r10",
            "pop r10",
            ".cfi_adjust_cfa_offset -8",
            "mov r11, qword ptr [r10 + {ts_lean_outer}]",
            "mov qword ptr [r10 + {ts_ctx}], r11",
            "mov qword ptr [r10 + {ts_lean_expect}], 0",
            "ret",
            // The arguments, r11 of them.
            "5:",
            "mov r11d, edx",
            "cmp r11, {arg_slots}",
            "ja 8f",
            "push rbx",
            ".cfi_adjust_cfa_offset 8",
            ".cfi_rel_offset rbx, 0",
            "6:",
            "mov rbx, qword ptr [rsi + r11 * 8 - 8]",
            "cmp rbx, qword ptr [rip + {statics} + {s_none}]",
            "je 7f",
            "mov rbx, qword ptr [rbx + 8]",
            "cmp rbx, qword ptr [rip + {statics} + {s_float}]",
            "je 7f",
            "cmp rbx, qword ptr [rip + {statics} + {s_long}]",
            "je 7f",
            "cmp rbx, qword ptr [rip + {statics} + {s_bool}]",
            "je 7f",
            "pop rbx",
            ".cfi_adjust_cfa_offset -8",
            ".cfi_restore rbx",
            "jmp 8f",
            ".cfi_adjust_cfa_offset 8",
            ".cfi_rel_offset rbx, 0",
            "7:",
            "dec r11",
            "jnz 6b",
            "pop rbx",
            ".cfi_adjust_cfa_offset -8",
            ".cfi_restore rbx",
            "jmp 4b",
            // A repeat to finish in Rust: the thread's state and the statistics as the fifth
            // and sixth arguments.
            "8:",
            "mov r8, rax",
            "jmp {repeat}",
            // Anything else: the Rust wrapper, registers as they came.
            "9:",
            "jmp {full}",
            ".cfi_endproc",
            concat!(".size ", $name, ", . - ", $name),
            ".popsection",
            def_at = const $def_at,
            full = sym $full,
            repeat = sym $repeat,
            lean_thread = sym LEAN_THREAD,
            statics = sym STATICS,
            s_tstate_cell = const S_TSTATE_CELL,
            s_none = const S_NONE,
            s_float = const S_FLOAT,
            s_long = const S_LONG,
            s_bool = const S_BOOL,
            ts_owner = const ts::OWNER,
            ts_ctx = const ts::CTX,
            ts_stack_countdown = const ts::STACK_COUNTDOWN,
            ts_last_ip = const ts::LAST_IP,
            ts_last_stats = const ts::LAST_STATS,
            ts_lean = const ts::LEAN,
            ts_lean_expect = const ts::LEAN_EXPECT,
            ts_lean_site = const ts::LEAN_SITE,
            ts_cframe = const TS_CFRAME,
            cf_current = const CF_CURRENT_FRAME,
            f_ip = const F_PREV_INSTR,
            b_key = const offset_of!(Bracketed, key),
            b_vectorcall = const offset_of!(Bracketed, vectorcall),
            via_got_bit = const 8 * offset_of!(CallCtx, native_via_got),
            ts_lean_outer = const ts::LEAN_OUTER,
            st_function = const offset_of!(CallStats, function),
            st_site = const offset_of!(CallStats, site),
            st_countdown = const offset_of!(CallStats, countdown),
            st_calls = const offset_of!(CallStats, calls),
            st_python_calls = const offset_of!(CallStats, python_calls),
            arg_slots = const ARG_SLOTS,
        );
    };
}

lean_wrapper!(
    "ffiprof_lean_cfunction",
    CF_ML,
    super::bracketed_vectorcall::<CF_ML>,
    super::lean_repeat::<CF_ML>
);
lean_wrapper!(
    "ffiprof_lean_descr",
    DESCR_METHOD,
    super::bracketed_vectorcall::<DESCR_METHOD>,
    super::lean_repeat::<DESCR_METHOD>
);

// The lean context's first word: the site (low four bytes), then `native_via_got` and the
// other flags, which the one store clears.
const _: () = assert!(
    offset_of!(CallCtx, site) == 0
        && offset_of!(CallCtx, native_via_got) == 4
        && offset_of!(CallCtx, fast) == 7
        && offset_of!(CallCtx, expect) == 8
);

// The counts and countdowns the assembly moves are the sizes it moves.
const _: () = assert!(
    std::mem::size_of::<crate::record::recorder::Counter>() == 8
        && std::mem::size_of::<std::sync::atomic::AtomicU32>() == 4
        && ARG_SLOTS < 128
);
