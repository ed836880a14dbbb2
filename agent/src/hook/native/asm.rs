//! The GOT trampoline's machine code (see `trampoline` for what it does and why): the thunks,
//! the assembly fast path, the enter and leave stubs, and the unwinder hooks. Everything here is
//! assembly; the work it calls is `trampoline`'s.

use std::sync::atomic::AtomicUsize;

use super::shadow::{self, Shadow};
#[cfg(feature = "floor-probe")]
use super::trampoline::TARGETS;
use super::trampoline::{native_enter, native_leave, unwind_restore};
use crate::record::recorder;

std::arch::global_asm!(
    ".pushsection .text.ffiprof_native,\"ax\",@progbits",
    // The thunks: 16 bytes each, r11 = the thunk's number.
    ".p2align 4",
    ".globl ffiprof_native_thunks",
    ".hidden ffiprof_native_thunks",
    "ffiprof_native_thunks:",
    ".set .Lffiprof_thunk_number, 0",
    ".rept 4096",
    "mov r11d, .Lffiprof_thunk_number",
    "jmp 3f",
    ".p2align 4, 0xcc",
    ".set .Lffiprof_thunk_number, .Lffiprof_thunk_number + 1",
    ".endr",
    // The fast path, on entry r11 = the thunk's number, [rsp] the caller's return address. It
    // uses r10 and r11 (which a call through a PLT may clobber anyway: the lazy binder does not
    // keep them) and rax, saved. A call that only needs counting — recording on (off, every
    // call takes the enter stub, which passes it through: the floor probe is timed anyway), the thread's
    // shadow stack in its home slot and not busy, its statistics cached (only once its pair's
    // first calls are done), not inside a timed Python-level call that wants its native time, and —
    // outside such a Python-level call — not sampled by the thread's countdown: is counted
    // with one `inc` and goes straight to its target.
    // Everything else takes the enter stub below.
    "3:",
    ".globl ffiprof_native_common",
    ".hidden ffiprof_native_common",
    "ffiprof_native_common:",
    "push rax",
    // Inside an untimed repeat of a bracketed builtin (the lean context innermost: a builtin
    // whose native part it reaches through us) on the thread the builtins' lean path noted
    // (while recording is on): that call is not timed, so neither is this one; counted with its
    // thread's statistics from the shadow stack that thread's recorder noted (in step with it:
    // see `ThreadState::note_native_shadow`). Its `busy` flag is not asked: counting is two
    // `inc`s, each whole under a signal; a handler's call that interrupted the enter stub's
    // own count of the same pair loses one count, as it would pass uncounted with the flag.
    "mov rax, qword ptr [rip + {lean_thread}]",
    "mov r10, qword ptr fs:0",
    "cmp r10, qword ptr [rax + {ts_owner}]",
    "jne 2f",
    "lea r10, [rax + {ts_lean}]",
    "cmp r10, qword ptr [rax + {ts_ctx}]",
    "jne 2f",
    // (Never null: zeros stand for none, whose cache holds no statistics.)
    "mov rax, qword ptr [rax + {ts_native_shadow}]",
    "mov r10, qword ptr [rax + r11 * 8 + {sh_stats}]",
    "test r10, r10",
    "je 2f",
    "inc qword ptr [r10 + {calls}]",
    "inc qword ptr [r10 + {in_builtin}]",
    "pop rax",
    "jmp qword ptr [r10 + {function}]",
    // Any other call: the thread's shadow stack from the table.
    "2:",
    "cmp byte ptr [rip + {active}], 0",
    "je 7f",
    "mov r10, qword ptr fs:0",
    "mov rax, r10",
    "imul rax, qword ptr [rip + {mul}]",
    "shr rax, 40",
    "and eax, {slot_mask}",
    "shl eax, 4",
    "add rax, qword ptr [rip + {table}]",
    "cmp r10, qword ptr [rax]",
    "jne 7f",
    "mov rax, qword ptr [rax + 8]",
    "test rax, rax",
    "jz 7f",
    "cmp dword ptr [rax + {busy}], 0",
    "jne 7f",
    "mov r10, qword ptr [rip + {generation}]",
    "cmp r10, qword ptr [rax + {sh_generation}]",
    "jne 7f",
    "mov r10, qword ptr [rax + {sh_recorder}]",
    "test r10, r10",
    "jz 7f",
    "mov r10, qword ptr [r10 + {rec_ctx}]",
    "test r10, r10",
    "jz 8f",
    // native_via_got set, timed not (one word: see the assertion below).
    "cmp word ptr [r10 + {ctx_via_got}], 1",
    "jne 9f",
    // Inside an untimed Python-level call that takes its native time from us: that call's
    // sampling decides, not the thread's countdown.
    "mov r10, qword ptr [rax + r11 * 8 + {sh_stats}]",
    "test r10, r10",
    "jz 7f",
    "inc qword ptr [r10 + {calls}]",
    "inc qword ptr [r10 + {in_builtin}]",
    "jmp 6f",
    // Not an untimed call that takes its native time from us: a timed one takes the enter stub,
    // any other Python-level call leaves it to the thread's countdown.
    "9:",
    "cmp byte ptr [r10 + {ctx_via_got}], 0",
    "jne 7f",
    "8:",
    "mov r10, qword ptr [rax + r11 * 8 + {sh_stats}]",
    "test r10, r10",
    "jz 7f",
    "cmp dword ptr [rax + {countdown}], 1",
    "jbe 7f",
    "dec dword ptr [rax + {countdown}]",
    "inc qword ptr [r10 + {calls}]",
    // r10 = the statistics of this thread and thunk, whose C function is the thunk's target.
    "6:",
    "pop rax",
    "jmp qword ptr [r10 + {function}]",
    "7:",
    "pop rax",
    // The enter stub. On entry rsp ≡ 8 (mod 16), [rsp] the caller's return address.
    "push rbp",
    "mov rbp, rsp",
    "sub rsp, 192",
    "mov [rsp], rdi",
    "mov [rsp + 8], rsi",
    "mov [rsp + 16], rdx",
    "mov [rsp + 24], rcx",
    "mov [rsp + 32], r8",
    "mov [rsp + 40], r9",
    "mov [rsp + 48], rax",
    "mov [rsp + 56], r10",
    "movaps [rsp + 64], xmm0",
    "movaps [rsp + 80], xmm1",
    "movaps [rsp + 96], xmm2",
    "movaps [rsp + 112], xmm3",
    "movaps [rsp + 128], xmm4",
    "movaps [rsp + 144], xmm5",
    "movaps [rsp + 160], xmm6",
    "movaps [rsp + 176], xmm7",
    "mov rdi, r11",
    "lea rsi, [rbp + 8]",
    "call {enter}",
    "mov r11, rax",
    "mov rdi, [rsp]",
    "mov rsi, [rsp + 8]",
    "mov rdx, [rsp + 16]",
    "mov rcx, [rsp + 24]",
    "mov r8, [rsp + 32]",
    "mov r9, [rsp + 40]",
    "mov rax, [rsp + 48]",
    "mov r10, [rsp + 56]",
    "movaps xmm0, [rsp + 64]",
    "movaps xmm1, [rsp + 80]",
    "movaps xmm2, [rsp + 96]",
    "movaps xmm3, [rsp + 112]",
    "movaps xmm4, [rsp + 128]",
    "movaps xmm5, [rsp + 144]",
    "movaps xmm6, [rsp + 160]",
    "movaps xmm7, [rsp + 176]",
    "mov rsp, rbp",
    "pop rbp",
    "jmp r11",
    // The leave stub: the target's `ret` lands here, rsp ≡ 0 (mod 16), one above the slot. It
    // goes back to the caller with a `jmp`, not a `ret`: the target's `ret` (a misprediction: the
    // return-stack buffer said the caller) popped the caller's entry from the return-stack
    // buffer already, and another `ret` would pop its caller's, leaving every return up the
    // stack mispredicted; the jump leaves them paired. r11 is free at a return.
    ".p2align 4",
    ".globl ffiprof_native_leave",
    ".hidden ffiprof_native_leave",
    "ffiprof_native_leave:",
    "sub rsp, 8",
    "push rax",
    "push rdx",
    "sub rsp, 40",
    "movdqu [rsp], xmm0",
    "movdqu [rsp + 16], xmm1",
    "lea rdi, [rsp + 64]",
    "call {leave}",
    "mov r11, rax",
    "movdqu xmm0, [rsp]",
    "movdqu xmm1, [rsp + 16]",
    "add rsp, 40",
    "pop rdx",
    "pop rax",
    "add rsp, 8",
    "jmp r11",
    ".popsection",
    enter = sym native_enter,
    leave = sym native_leave,
    active = sym crate::runtime::ACTIVE,
    mul = sym shadow::HASH_MUL,
    slot_mask = const shadow::SLOT_MASK,
    table = sym shadow::TABLE_REF,
    busy = const std::mem::offset_of!(Shadow, busy),
    countdown = const std::mem::offset_of!(Shadow, countdown),
    generation = sym recorder::GENERATION,
    sh_generation = const std::mem::offset_of!(Shadow, generation),
    sh_recorder = const std::mem::offset_of!(Shadow, recorder),
    sh_stats = const std::mem::offset_of!(Shadow, stats),
    rec_ctx = const std::mem::offset_of!(recorder::ThreadRecorder, python)
        + std::mem::offset_of!(crate::record::call_ctx::ThreadState, ctx),
    ctx_via_got = const std::mem::offset_of!(crate::record::call_ctx::CallCtx, native_via_got),
    calls = const std::mem::offset_of!(recorder::CallStats, calls),
    in_builtin = const std::mem::offset_of!(recorder::CallStats, in_builtin_calls),
    function = const std::mem::offset_of!(recorder::CallStats, function),
    lean_thread = sym crate::record::call_ctx::LEAN_THREAD,
    ts_owner = const crate::record::call_ctx::lean_offsets::OWNER,
    ts_ctx = const crate::record::call_ctx::lean_offsets::CTX,
    ts_lean = const crate::record::call_ctx::lean_offsets::LEAN,
    ts_native_shadow = const crate::record::call_ctx::lean_offsets::NATIVE_SHADOW,
);

// The floor probe's thunks (feature `floor-probe`, benchmarks only: `python::floor_probe`): the
// same 16-byte thunks, in two tables of their own. Floor 1's only jump to the target; floor 2's
// also count the call into the thread's statistics of the target (the fast path's look-up, with
// none of its checks), and take the shipped path (`ffiprof_native_common`) when the thread has
// no cached statistics yet.
#[cfg(feature = "floor-probe")]
std::arch::global_asm!(
    ".pushsection .text.ffiprof_floor,\"ax\",@progbits",
    ".p2align 4",
    ".globl ffiprof_floor1_thunks",
    ".hidden ffiprof_floor1_thunks",
    "ffiprof_floor1_thunks:",
    ".set .Lffiprof_floor1_number, 0",
    ".rept 4096",
    "mov r11d, .Lffiprof_floor1_number",
    "jmp 1f",
    ".p2align 4, 0xcc",
    ".set .Lffiprof_floor1_number, .Lffiprof_floor1_number + 1",
    ".endr",
    "1:",
    "lea r10, [rip + {targets}]",
    "jmp qword ptr [r10 + r11 * 8]",
    ".p2align 4",
    ".globl ffiprof_floor2_thunks",
    ".hidden ffiprof_floor2_thunks",
    "ffiprof_floor2_thunks:",
    ".set .Lffiprof_floor2_number, 0",
    ".rept 4096",
    "mov r11d, .Lffiprof_floor2_number",
    "jmp 2f",
    ".p2align 4, 0xcc",
    ".set .Lffiprof_floor2_number, .Lffiprof_floor2_number + 1",
    ".endr",
    "2:",
    "push rax",
    "mov r10, qword ptr fs:0",
    "mov rax, r10",
    "imul rax, qword ptr [rip + {mul}]",
    "shr rax, 40",
    "and eax, {slot_mask}",
    "shl eax, 4",
    "add rax, qword ptr [rip + {table}]",
    "cmp r10, qword ptr [rax]",
    "jne 3f",
    "mov rax, qword ptr [rax + 8]",
    "test rax, rax",
    "jz 3f",
    "mov r10, qword ptr [rax + r11 * 8 + {sh_stats}]",
    "test r10, r10",
    "jz 3f",
    "inc qword ptr [r10 + {calls}]",
    "lea rax, [rip + {targets}]",
    "mov r11, qword ptr [rax + r11 * 8]",
    "pop rax",
    "jmp r11",
    "3:",
    "pop rax",
    "jmp ffiprof_native_common",
    ".popsection",
    mul = sym shadow::HASH_MUL,
    slot_mask = const shadow::SLOT_MASK,
    table = sym shadow::TABLE_REF,
    sh_stats = const std::mem::offset_of!(Shadow, stats),
    calls = const std::mem::offset_of!(recorder::CallStats, calls),
    targets = sym TARGETS,
);

// The stand-in for no shadow stack (`call_ctx::NO_NATIVE_SHADOW`) covers a whole one.
const _: () =
    assert!(std::mem::size_of::<Shadow>() <= crate::record::call_ctx::NATIVE_SHADOW_BYTES);

// The fast path compares `native_via_got` and `timed` as one little-endian word.
const _: () = assert!(
    std::mem::offset_of!(crate::record::call_ctx::CallCtx, timed)
        == std::mem::offset_of!(crate::record::call_ctx::CallCtx, native_via_got) + 1
);

/// Hooks that run `unwind_restore` and jump on to the real unwinder entry, registers as they
/// came (up to three arguments), so that the unwinder sees its caller's frames untouched.
macro_rules! unwind_hooks {
    ($($name:literal, $real:ident, $hook:ident;)*) => {
        $(
            static $real: AtomicUsize = AtomicUsize::new(0);
            std::arch::global_asm!(
                concat!(".pushsection .text.", $name, ",\"ax\",@progbits"),
                concat!(".globl ", $name),
                concat!(".hidden ", $name),
                concat!($name, ":"),
                "push rdi",
                "push rsi",
                "push rdx",
                "lea rdi, [rsp + 24]",
                "call {restore}",
                "pop rdx",
                "pop rsi",
                "pop rdi",
                "jmp qword ptr [rip + {real}]",
                ".popsection",
                restore = sym unwind_restore,
                real = sym $real,
            );
        )*
        extern "C" {
            $(#[link_name = $name] fn $hook();)*
        }
        /// The unwinder entries hooked: (symbol, the real function's cell, the hook).
        pub(super) fn unwind_hooks() -> Vec<(&'static str, &'static AtomicUsize, usize)> {
            vec![$((&$name[8..], &$real, $hook as *const () as usize)),*]
        }
    };
}

// Each hook's name is "ffiprof_" and the unwinder's symbol.
unwind_hooks! {
    "ffiprof__Unwind_RaiseException", RAISE, hook_raise;
    "ffiprof__Unwind_Resume", RESUME, hook_resume;
    "ffiprof__Unwind_Resume_or_Rethrow", RETHROW, hook_rethrow;
    "ffiprof__Unwind_ForcedUnwind", FORCED, hook_forced;
}
