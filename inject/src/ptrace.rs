//! The tracee guard: one seized thread of the target, made to run a few calls of our choosing and
//! then put back exactly as it was.
//!
//! Everything the thread had is saved at the first stop — general registers (with `orig_rax`, so
//! an interrupted system call restarts as if nothing happened), the whole extended FPU/SSE/AVX
//! state, and the stack just below the red zone that our calls write to — and restored before
//! detaching, on success, on error and on panic ([`Drop`]). Signals that arrive while we hold the
//! thread are held back and delivered at detach, so the program still sees every one of them.
//!
//! A call returns into a trap we can recognise instead of into the program: address 0 (a SIGSEGV
//! stop with `rip == 0`) or an `int3` byte found in the target's code (a SIGTRAP stop just past
//! it). The tracer sees the fault before any handler; it is suppressed, so the program's own
//! SIGSEGV handler (faulthandler) never runs.

use std::fs::File;
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use super::error::InjectError;

/// `NT_X86_XSTATE`: the regset holding the full XSAVE area (x87, SSE, AVX, AVX-512...).
const NT_X86_XSTATE: libc::c_int = 0x202;
/// Big enough for any XSAVE layout the kernel reports today (AMX tiles included).
const XSTATE_BUF: usize = 16 * 1024;
/// Bytes below the stack pointer that the ABI lets the interrupted code use without moving `rsp`.
const RED_ZONE: u64 = 128;
/// How much stack below the red zone we save and restore around our calls.
const STACK_WINDOW: u64 = 4096;
const EFLAGS_TF: u64 = 1 << 8;
const EFLAGS_DF: u64 = 1 << 10;

/// How a call we inject hands control back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trap {
    /// Return to address 0: a SIGSEGV stop with `rip == 0`.
    ReturnToZero,
    /// Return to an `int3` byte at this address: a SIGTRAP stop with `rip == addr + 1`.
    Int3 { addr: u64 },
}

impl Trap {
    fn return_address(self) -> u64 {
        match self {
            Trap::ReturnToZero => 0,
            Trap::Int3 { addr } => addr,
        }
    }

    fn matches(self, sig: i32, rip: u64) -> bool {
        match self {
            Trap::ReturnToZero => sig == libc::SIGSEGV && rip == 0,
            Trap::Int3 { addr } => sig == libc::SIGTRAP && rip == addr + 1,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    Exited,
    /// `PTRACE_EVENT_STOP`: our interrupt, or a group-stop.
    Event,
    /// A signal-delivery-stop.
    Signal(i32),
}

enum FpState {
    Xstate(Vec<u8>),
    Fx(Box<libc::user_fpregs_struct>),
}

struct Saved {
    regs: libc::user_regs_struct,
    fp: FpState,
    /// `(address, bytes)` of the stack below the red zone, if it could be read.
    stack: Option<(u64, Vec<u8>)>,
}

/// One seized thread. Not `Send`: ptrace requests must come from the thread that seized it.
pub struct Tracee {
    pid: i32,
    tid: i32,
    mem: File,
    saved: Saved,
    /// Our code may be running (not stopped) — Drop must interrupt before restoring.
    running: bool,
    /// Stopped in a signal-delivery-stop (after a trap), where a detach can deliver a signal.
    in_signal_stop: bool,
    detached: bool,
    deferred_signals: Vec<i32>,
    _not_send: PhantomData<*const ()>,
}

fn ptrace_err(op: &'static str, tid: i32, pid: i32) -> InjectError {
    let source = std::io::Error::last_os_error();
    if source.raw_os_error() == Some(libc::ESRCH) {
        return InjectError::TargetExited {
            pid,
            during: "while the injector held it",
        };
    }
    InjectError::Ptrace { op, tid, source }
}

fn request(
    op: &'static str,
    req: libc::c_uint,
    tid: i32,
    pid: i32,
    addr: usize,
    data: usize,
) -> Result<libc::c_long, InjectError> {
    // SAFETY: every request we pass either takes no pointers or points `data` at a buffer owned by
    // the caller that outlives the call and has the size the request expects (see each caller).
    let rc = unsafe {
        libc::ptrace(
            req,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    if rc == -1 {
        Err(ptrace_err(op, tid, pid))
    } else {
        Ok(rc)
    }
}

/// Waits for the next stop of `tid`, polling so a wedged target cannot wedge us.
fn wait_stop(tid: i32, deadline: Instant) -> Result<Option<Stop>, std::io::Error> {
    let mut nap = Duration::from_micros(20);
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes only into `status`, which we own.
        let rc = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
        if rc == -1 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ECHILD) {
                return Ok(Some(Stop::Exited));
            }
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(err);
        }
        if rc == tid {
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                return Ok(Some(Stop::Exited));
            }
            if libc::WIFSTOPPED(status) {
                if status >> 16 == libc::PTRACE_EVENT_STOP {
                    return Ok(Some(Stop::Event));
                }
                return Ok(Some(Stop::Signal(libc::WSTOPSIG(status))));
            }
            continue;
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(1));
    }
}

impl Tracee {
    /// Seizes `tid` of process `pid` and stops it. On `EPERM` the caller diagnoses why.
    pub fn seize(pid: i32, tid: i32, timeout: Duration) -> Result<Tracee, InjectError> {
        request("PTRACE_SEIZE", libc::PTRACE_SEIZE, tid, pid, 0, 0)?;
        // From here on, any early return must detach: build the guard as soon as we can.
        let detach_now = || {
            // SAFETY: PTRACE_DETACH takes no pointers.
            unsafe {
                libc::ptrace(
                    libc::PTRACE_DETACH,
                    tid,
                    std::ptr::null_mut::<libc::c_void>(),
                    std::ptr::null_mut::<libc::c_void>(),
                )
            };
        };
        if let Err(e) = request("PTRACE_INTERRUPT", libc::PTRACE_INTERRUPT, tid, pid, 0, 0) {
            detach_now();
            return Err(e);
        }
        let deadline = Instant::now() + timeout;
        let mut deferred = Vec::new();
        loop {
            match wait_stop(tid, deadline) {
                Ok(Some(Stop::Event)) => break,
                Ok(Some(Stop::Signal(sig))) => {
                    deferred.push(sig);
                    if let Err(e) = request("PTRACE_CONT", libc::PTRACE_CONT, tid, pid, 0, 0) {
                        detach_now();
                        return Err(e);
                    }
                }
                Ok(Some(Stop::Exited)) => {
                    return Err(InjectError::TargetExited {
                        pid,
                        during: "while being stopped",
                    })
                }
                Ok(None) => {
                    detach_now();
                    return Err(InjectError::Timeout {
                        pid,
                        what: "waiting for a thread to stop",
                        after: timeout,
                        consequence: "it was left running untouched",
                    });
                }
                Err(source) => {
                    detach_now();
                    return Err(InjectError::Ptrace {
                        op: "waitpid",
                        tid,
                        source,
                    });
                }
            }
        }
        let mem = match File::options()
            .read(true)
            .write(true)
            .open(format!("/proc/{tid}/mem"))
        {
            Ok(f) => f,
            Err(e) => {
                detach_now();
                return Err(InjectError::io(format!("/proc/{tid}/mem"), e));
            }
        };
        let saved = match save_state(pid, tid, &mem) {
            Ok(s) => s,
            Err(e) => {
                detach_now();
                return Err(e);
            }
        };
        Ok(Tracee {
            pid,
            tid,
            mem,
            saved,
            running: false,
            in_signal_stop: false,
            detached: false,
            deferred_signals: deferred,
            _not_send: PhantomData,
        })
    }

    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// Registers as they were when we stopped the thread.
    pub fn original_regs(&self) -> &libc::user_regs_struct {
        &self.saved.regs
    }

    pub fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.mem.read_exact_at(buf, addr)
    }

    pub fn write(&self, addr: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.mem.write_all_at(bytes, addr)
    }

    /// Calls the function at `func` with up to six integer arguments on the seized thread and
    /// returns `rax`. The thread starts from its saved state with a fresh frame below the red zone.
    pub fn call(
        &mut self,
        func: u64,
        args: &[u64],
        trap: Trap,
        timeout: Duration,
    ) -> Result<u64, InjectError> {
        let mut regs = self.frame(trap)?;
        let [a0, a1, a2, a3, a4, a5] = pad6(args);
        (regs.rdi, regs.rsi, regs.rdx, regs.rcx, regs.r8, regs.r9) = (a0, a1, a2, a3, a4, a5);
        regs.rip = func;
        // Variadic callees read the number of vector arguments from al.
        regs.rax = 0;
        self.run(regs, trap, timeout)
    }

    /// Executes system call `nr` through a `syscall; ret` gadget at `gadget` and returns `rax`.
    pub fn syscall(
        &mut self,
        gadget: u64,
        nr: i64,
        args: &[u64],
        trap: Trap,
        timeout: Duration,
    ) -> Result<u64, InjectError> {
        let mut regs = self.frame(trap)?;
        let [a0, a1, a2, a3, a4, a5] = pad6(args);
        (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9) = (a0, a1, a2, a3, a4, a5);
        regs.rax = nr as u64;
        regs.rip = gadget;
        self.run(regs, trap, timeout)
    }

    /// Registers for a new call: the saved ones with a 16-byte aligned stack below the red zone,
    /// the trap as return address, and no system call to restart.
    fn frame(&mut self, trap: Trap) -> Result<libc::user_regs_struct, InjectError> {
        let mut regs = self.saved.regs;
        let base = (regs.rsp - RED_ZONE - 256) & !0xf;
        let rsp = base - 8;
        self.write(rsp, &trap.return_address().to_ne_bytes())
            .map_err(|e| {
                InjectError::io(format!("/proc/{}/mem (stack at {rsp:#x})", self.tid), e)
            })?;
        regs.rsp = rsp;
        // As gdb does: with orig_rax = -1 the kernel will not "restart" a system call the thread
        // was stopped in by rewinding our new rip by two bytes.
        regs.orig_rax = u64::MAX;
        regs.eflags &= !(EFLAGS_DF | EFLAGS_TF);
        Ok(regs)
    }

    fn run(
        &mut self,
        regs: libc::user_regs_struct,
        trap: Trap,
        timeout: Duration,
    ) -> Result<u64, InjectError> {
        self.set_regs(&regs)?;
        request("PTRACE_CONT", libc::PTRACE_CONT, self.tid, self.pid, 0, 0)?;
        self.running = true;
        self.in_signal_stop = false;
        let deadline = Instant::now() + timeout;
        loop {
            match wait_stop(self.tid, deadline) {
                Ok(Some(Stop::Exited)) => {
                    self.running = false;
                    self.detached = true;
                    return Err(InjectError::TargetExited {
                        pid: self.pid,
                        during: "while running the injected call",
                    });
                }
                Ok(Some(Stop::Event)) => {
                    request("PTRACE_CONT", libc::PTRACE_CONT, self.tid, self.pid, 0, 0)?;
                }
                Ok(Some(Stop::Signal(sig))) => {
                    let now = self.get_regs()?;
                    if trap.matches(sig, now.rip) {
                        self.running = false;
                        self.in_signal_stop = true;
                        return Ok(now.rax);
                    }
                    if matches!(
                        sig,
                        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP
                    ) {
                        // Our call faulted: suppress the fault, the restore undoes it.
                        self.running = false;
                        self.in_signal_stop = true;
                        return Err(InjectError::RemoteCall {
                            pid: self.pid,
                            what: "call",
                            detail: format!(
                                "it faulted with signal {sig} at {:#x}; the thread was restored",
                                now.rip
                            ),
                        });
                    }
                    self.deferred_signals.push(sig);
                    request("PTRACE_CONT", libc::PTRACE_CONT, self.tid, self.pid, 0, 0)?;
                }
                Ok(None) => {
                    self.interrupt_and_wait();
                    return Err(InjectError::Timeout {
                        pid: self.pid,
                        what: "waiting for the injected call to return",
                        after: timeout,
                        consequence: "the thread was interrupted and restored",
                    });
                }
                Err(source) => {
                    return Err(InjectError::Ptrace {
                        op: "waitpid",
                        tid: self.tid,
                        source,
                    })
                }
            }
        }
    }

    /// Brings a thread running our code back to a stop so it can be restored.
    fn interrupt_and_wait(&mut self) {
        if !self.running {
            return;
        }
        if request(
            "PTRACE_INTERRUPT",
            libc::PTRACE_INTERRUPT,
            self.tid,
            self.pid,
            0,
            0,
        )
        .is_err()
        {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match wait_stop(self.tid, deadline) {
                Ok(Some(Stop::Event)) => break,
                Ok(Some(Stop::Signal(sig))) => {
                    self.deferred_signals.push(sig);
                    if request("PTRACE_CONT", libc::PTRACE_CONT, self.tid, self.pid, 0, 0).is_err()
                    {
                        return;
                    }
                }
                Ok(Some(Stop::Exited)) => {
                    self.detached = true;
                    break;
                }
                Ok(None) | Err(_) => return,
            }
        }
        self.running = false;
    }

    fn get_regs(&self) -> Result<libc::user_regs_struct, InjectError> {
        get_regs(self.pid, self.tid)
    }

    fn set_regs(&self, regs: &libc::user_regs_struct) -> Result<(), InjectError> {
        request(
            "PTRACE_SETREGS",
            libc::PTRACE_SETREGS,
            self.tid,
            self.pid,
            0,
            regs as *const _ as usize,
        )
        .map(|_| ())
    }

    fn restore(&mut self) -> Result<(), InjectError> {
        if let Some((addr, bytes)) = &self.saved.stack {
            self.write(*addr, bytes)
                .map_err(|e| InjectError::io(format!("/proc/{}/mem", self.tid), e))?;
        }
        match &mut self.saved.fp {
            FpState::Xstate(buf) => {
                let mut iov = libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                };
                request(
                    "PTRACE_SETREGSET",
                    libc::PTRACE_SETREGSET,
                    self.tid,
                    self.pid,
                    NT_X86_XSTATE as usize,
                    &mut iov as *mut _ as usize,
                )?;
            }
            FpState::Fx(fx) => {
                request(
                    "PTRACE_SETFPREGS",
                    libc::PTRACE_SETFPREGS,
                    self.tid,
                    self.pid,
                    0,
                    &**fx as *const _ as usize,
                )?;
            }
        }
        let regs = self.saved.regs;
        self.set_regs(&regs)
    }

    /// Restores everything and lets the thread go, delivering any signal held back meanwhile.
    pub fn detach(mut self) -> Result<(), InjectError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), InjectError> {
        if self.detached {
            return Ok(());
        }
        self.interrupt_and_wait();
        if self.detached {
            return Ok(());
        }
        let restored = self.restore();
        // In a signal-delivery-stop (after a trap) the detach itself delivers the first held-back
        // signal, so it reaches the program exactly where it would have; other stops cannot carry
        // a signal, so those are sent again once the thread runs.
        let (first, rest) = if self.in_signal_stop {
            (
                self.deferred_signals.first().copied().unwrap_or(0),
                self.deferred_signals.get(1..).unwrap_or(&[]),
            )
        } else {
            (0, &self.deferred_signals[..])
        };
        let detached = request(
            "PTRACE_DETACH",
            libc::PTRACE_DETACH,
            self.tid,
            self.pid,
            0,
            first as usize,
        );
        self.detached = true;
        for &sig in rest {
            // SAFETY: tgkill takes plain integers.
            unsafe { libc::syscall(libc::SYS_tgkill, self.pid, self.tid, sig) };
        }
        restored.and(detached.map(|_| ()))
    }
}

impl Drop for Tracee {
    fn drop(&mut self) {
        // Best effort on the error and panic paths: the normal path called detach().
        let _ = self.finish();
    }
}

fn pad6(args: &[u64]) -> [u64; 6] {
    assert!(args.len() <= 6, "at most six register arguments");
    let mut out = [0u64; 6];
    out[..args.len()].copy_from_slice(args);
    out
}

fn get_regs(pid: i32, tid: i32) -> Result<libc::user_regs_struct, InjectError> {
    // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    request(
        "PTRACE_GETREGS",
        libc::PTRACE_GETREGS,
        tid,
        pid,
        0,
        &mut regs as *mut _ as usize,
    )?;
    Ok(regs)
}

fn save_state(pid: i32, tid: i32, mem: &File) -> Result<Saved, InjectError> {
    let regs = get_regs(pid, tid)?;
    let mut buf = vec![0u8; XSTATE_BUF];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let fp = match request(
        "PTRACE_GETREGSET",
        libc::PTRACE_GETREGSET,
        tid,
        pid,
        NT_X86_XSTATE as usize,
        &mut iov as *mut _ as usize,
    ) {
        Ok(_) => {
            buf.truncate(iov.iov_len);
            FpState::Xstate(buf)
        }
        Err(_) => {
            // SAFETY: user_fpregs_struct is plain integers; all-zero is a valid value.
            let mut fx: Box<libc::user_fpregs_struct> = Box::new(unsafe { std::mem::zeroed() });
            request(
                "PTRACE_GETFPREGS",
                libc::PTRACE_GETFPREGS,
                tid,
                pid,
                0,
                &mut *fx as *mut _ as usize,
            )?;
            FpState::Fx(fx)
        }
    };
    let top = regs.rsp - RED_ZONE;
    let stack = [STACK_WINDOW, 512].iter().find_map(|&len| {
        let mut bytes = vec![0u8; len as usize];
        mem.read_exact_at(&mut bytes, top - len)
            .ok()
            .map(|_| (top - len, bytes))
    });
    Ok(Saved { regs, fp, stack })
}
