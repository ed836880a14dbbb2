//! Call sites and stacks, read straight from the interpreter's frame structs.
//!
//! A call site is keyed by (code object, instruction position) — two loads from the current frame
//! and a probe of a table — and its file, function and line are resolved once, the first time the
//! site is seen (resolving the line on every call would cost ~155 ns here). Everything here runs
//! with the GIL held, which is what serialises writers of the tables.
//!
//! Each position's slot is also an inline cache of the (function, site) statistics its last call
//! recorded into ([`Site::cached`]): the wrapper finds a pair there instead of in the thread's
//! table whenever the same thread calls the same C function from it again.
//!
//! A position in a pass-through frame (a generic forwarder, ctypes' own code, `--site-skip`: see
//! `site_rules`) carries a bit in its interned id: a call made there is attributed to the first
//! frame up the stack without that bit, at the cost of one bit test for every other call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use ffiprof_profile::Frame;
use parking_lot::Mutex;

use super::api::{self, Api, Layout};
use super::site_rules;
use crate::record::call_ctx::{LastStack, STACK_DEPTH};
use crate::record::recorder::{CallStats, ThreadRecorder};

const SITE_SLOTS: usize = 1 << 16;
/// Set in a slot's id when the position is in a pass-through frame. Ids themselves stay below
/// 0x10000 (statistics keys give them 16 bits).
const PASS_THROUGH: u32 = 1 << 31;

struct SiteSlot {
    code: AtomicUsize,
    ip: AtomicUsize,
    id: AtomicU32,
    /// The inline cache of the position: the statistics its last call recorded into, whichever
    /// thread made it (see [`Site::cached`]).
    stats: AtomicPtr<CallStats>,
}

static SITES: [SiteSlot; SITE_SLOTS] = [const {
    SiteSlot {
        code: AtomicUsize::new(0),
        ip: AtomicUsize::new(0),
        id: AtomicU32::new(0),
        stats: AtomicPtr::new(std::ptr::null_mut()),
    }
}; SITE_SLOTS];

/// The call site of a Python-level call, and the inline cache of its position when it has one
/// (a position found in its home slot and not passed through).
pub struct Site {
    pub id: u32,
    cache: Option<&'static AtomicPtr<CallStats>>,
}

impl Site {
    pub const UNKNOWN: Site = Site { id: 0, cache: None };

    /// A site found without the table (a thread's repeated call): nothing to cache.
    pub fn known(id: u32) -> Site {
        Site { id, cache: None }
    }

    /// Whether the position is its own site, found in its home slot: the only positions whose
    /// pair is cached, here or by a thread ([`ThreadState::repeated_call`]).
    ///
    /// [`ThreadState::repeated_call`]: crate::record::call_ctx::ThreadState::repeated_call
    pub fn cacheable(&self) -> bool {
        self.cache.is_some()
    }

    /// The statistics of (`function`, this site) of the thread whose recorder is `owner`, if they
    /// are the ones the position's last call used: a load and two compares, where a look-up in
    /// the thread's table hashes and probes. A position called by several threads (or functions)
    /// in turn just misses.
    #[inline(always)]
    pub fn cached(&self, function: usize, owner: &ThreadRecorder) -> Option<&'static CallStats> {
        // SAFETY: a cached CallStats is leaked and never freed, and was complete before it was
        // published (release store in `remember`).
        let s = unsafe { self.cache?.load(Ordering::Acquire).as_ref() }?;
        (s.function == function && s.owner == owner as *const ThreadRecorder as usize).then_some(s)
    }

    /// Makes `stats` the position's cached pair, if they are this site's.
    #[inline(always)]
    pub fn remember(&self, stats: &CallStats) {
        if let Some(cache) = self
            .cache
            .filter(|_| stats.site == self.id && stats.owner != 0)
        {
            cache.store(
                stats as *const CallStats as *mut CallStats,
                Ordering::Release,
            );
        }
    }
}

/// What a site id stands for, plus per-site facts found at first sight.
#[derive(Clone, Debug)]
pub struct SiteInfo {
    pub frame: Frame,
    pub undeclared_argtypes: bool,
    pub undeclared_restype: bool,
    /// A generic forwarder's call (`site_rules::is_forwarder`), whatever the `--site-skip`
    /// patterns say.
    pub forwarder: bool,
}

/// Site id n is `DESCRIPTIONS[n - 1]`.
static DESCRIPTIONS: Mutex<Vec<SiteInfo>> = Mutex::new(Vec::new());
/// Per-site flags readable without the lock on the hot path (bit 0: argtypes, bit 1: restype).
static FLAGS: [std::sync::atomic::AtomicU8; SITE_SLOTS] =
    [const { std::sync::atomic::AtomicU8::new(0) }; SITE_SLOTS];
/// Per site reached through pass-through frames: the innermost of them (its site id), the first
/// time it was.
static THROUGH: [AtomicU32; SITE_SLOTS] = [const { AtomicU32::new(0) }; SITE_SLOTS];
/// Interned stacks: site ids outermost first → stack id.
static STACKS: Mutex<Option<HashMap<Vec<u32>, u32>>> = Mutex::new(None);

#[inline(always)]
fn slot_of(code: usize, ip: usize) -> usize {
    ((code ^ ip.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) & (SITE_SLOTS - 1)
}

/// The innermost Python frame of this thread: (code object, instruction position). GIL held.
///
/// # Safety
/// Must be called with the GIL held, from a thread with a Python thread state.
#[inline(always)]
pub unsafe fn current_frame(api: &Api) -> Option<usize> {
    // SAFETY: with the GIL held the thread state and its frame chain are stable; the offsets
    // come from this interpreter version's headers.
    unsafe {
        let ts = api::thread_state(api);
        if ts == 0 {
            return None;
        }
        let l = &api.layout;
        let mut frame = api::word(ts, l.ts_frame);
        if let Some(off) = l.cframe_current {
            if frame == 0 {
                return None;
            }
            frame = api::word(frame, off);
        }
        (frame != 0).then_some(frame)
    }
}

/// (code, instruction position) of a frame; None for frames that are not Python code yet.
///
/// # Safety
/// `frame` must be a live frame of this interpreter version, GIL held.
#[inline(always)]
unsafe fn position(api: &Api, frame: usize) -> Option<(usize, usize)> {
    let l = &api.layout;
    // SAFETY: per the contract.
    unsafe {
        let code = api::word(frame, l.f_code) & !api::EXECUTABLE_TAGS;
        if code == 0 {
            return None;
        }
        if let Some(owner) = l.f_owner {
            let owner = *((frame + owner) as *const u8);
            if l.minor >= 12 && owner >= 3 {
                return None; // the C stack's (3.12+) or the interpreter's entry frame (3.14)
            }
            if api::type_of(code) != api.code_type {
                return None;
            }
            let ip = api::word(frame, l.f_ip);
            let first = code + l.co_code_adaptive;
            let traceable = *((code + l.co_firsttraceable) as *const i32) as usize;
            if owner != 1 && ip < first + 2 * traceable {
                return None; // an incomplete frame (still being set up)
            }
            Some((code, ip))
        } else {
            Some((code, *((frame + l.f_ip) as *const i32) as usize))
        }
    }
}

/// The site id of (code, ip), interning it on first sight, with [`PASS_THROUGH`] set when the
/// position is in a pass-through frame. GIL held.
///
/// # Safety
/// `code` must be a live object (a code object, or what a frame holds in its place) and the GIL
/// held.
#[inline(always)]
unsafe fn intern(api: &Api, code: usize, ip: usize, callable: usize) -> u32 {
    let mut i = slot_of(code, ip);
    for _ in 0..SITE_SLOTS {
        let s = &SITES[i];
        let c = s.code.load(Ordering::Relaxed);
        if c == code && s.ip.load(Ordering::Relaxed) == ip {
            return s.id.load(Ordering::Relaxed);
        }
        if c == 0 {
            // Not a code object (3.14's entry frame holds None): no site. Checked here, once per
            // position, not on the path of a call whose position is known.
            // SAFETY: `code` is a live object (contract).
            if unsafe { api::type_of(code) } != api.code_type {
                return 0;
            }
            // SAFETY: per the contract.
            return unsafe { intern_new(api, s, code, ip, callable) };
        }
        i = (i + 1) & (SITE_SLOTS - 1);
    }
    0
}

/// First sight of (code, ip): describe it and give it the free slot `s`. It allocates under a
/// lock, from inside the host's call: a panic yields site 0 (unknown) and the slot stays free.
///
/// # Safety
/// As [`intern`].
#[cold]
#[inline(never)]
unsafe fn intern_new(api: &Api, s: &SiteSlot, code: usize, ip: usize, callable: usize) -> u32 {
    crate::runtime::guard(0, || {
        // SAFETY: per the contract.
        let info = unsafe { describe(api, code, ip, callable) };
        let mut d = DESCRIPTIONS.lock();
        if d.len() >= 0xffff {
            return 0; // ids must fit the 16 bits statistics keys give them
        }
        d.push(info.clone());
        let id = d.len() as u32;
        drop(d);
        let flags = info.undeclared_argtypes as u8 | (info.undeclared_restype as u8) << 1;
        FLAGS[id as usize & (SITE_SLOTS - 1)].store(flags, Ordering::Relaxed);
        let id = id | pass_bit(&info);
        s.ip.store(ip, Ordering::Relaxed);
        s.id.store(id, Ordering::Relaxed);
        s.code.store(code, Ordering::Release);
        id
    })
}

fn pass_bit(info: &SiteInfo) -> u32 {
    if info.forwarder || site_rules::skipped_by_name(&info.frame) {
        PASS_THROUGH
    } else {
        0
    }
}

/// Resolves file, function and line of a position (slow path, once per site).
///
/// # Safety
/// GIL held; `code` a live code object, kept alive from here on by the reference we take.
unsafe fn describe(api: &Api, code: usize, ip: usize, callable: usize) -> SiteInfo {
    let l: &Layout = &api.layout;
    // SAFETY: per the contract; every object returned by getattr is released.
    unsafe {
        (api.incref)(code as *mut _);
        let offset = match l.minor {
            8 | 9 => ip,
            10 => ip * 2,
            _ => ip.saturating_sub(code + l.co_code_adaptive),
        };
        let line = (api.code_addr2line)(code as *mut _, offset as i32);
        let attr = |obj: usize, name: &std::ffi::CStr| -> String {
            let o = (api.getattr)(obj as *mut _, name.as_ptr());
            if o.is_null() {
                (api.err_clear)();
                return String::new();
            }
            let s = api::string(api, o);
            (api.decref)(o);
            s
        };
        let file = attr(code, c"co_filename");
        let function = if l.minor >= 11 {
            attr(code, c"co_qualname")
        } else {
            attr(code, c"co_name")
        };
        let (undeclared_argtypes, undeclared_restype) = if callable != 0 {
            undeclared(api, callable)
        } else {
            (false, false)
        };
        let forwarder = site_rules::is_forwarder(api, code, offset);
        SiteInfo {
            frame: Frame {
                file,
                function,
                line: line.max(0) as u32,
            },
            undeclared_argtypes,
            undeclared_restype,
            forwarder,
        }
    }
}

/// `PyCFuncPtrObject.argtypes`, `.restype` and `.errcheck`: what was assigned to this function
/// object itself (NULL until then), after the `CDataObject` part (96 bytes) and `thunk`,
/// `callable`, `converters`; unchanged from 3.8 to 3.13 (checked on every version by
/// tests/e2e_python.rs's restype case).
const FUNCPTR_ARGTYPES: usize = 120;
const FUNCPTR_RESTYPE: usize = 128;
const FUNCPTR_ERRCHECK: usize = 144;
/// The object must be at least this large for those reads (`PyCFuncPtrObject` is 160 bytes).
const FUNCPTR_MIN_SIZE: usize = FUNCPTR_ERRCHECK + 8;

/// The raw fields read so far disagreed with their Python attributes: never trusted again.
static FUNCPTR_FIELDS_WRONG: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The function object's own `restype` field (0: never assigned), when its `argtypes`, `restype`
/// and `errcheck` fields agree with the attributes ctypes gives for them, else `None` (and, once
/// they disagree, for good).
///
/// # Safety
/// GIL held; `callable` a live object; `argtypes`, `restype` its attributes (live, or null).
unsafe fn own_restype(
    api: &Api,
    callable: usize,
    argtypes: usize,
    restype: usize,
) -> Option<usize> {
    if FUNCPTR_FIELDS_WRONG.load(Ordering::Relaxed) || restype == 0 {
        return None;
    }
    // SAFETY: per the contract; the errcheck reference is released.
    unsafe {
        let ty = api::type_of(callable);
        if api::word(ty, api::TP_BASICSIZE) < FUNCPTR_MIN_SIZE {
            return None;
        }
        let errcheck = (api.getattr)(callable as *mut _, c"errcheck".as_ptr());
        if errcheck.is_null() {
            (api.err_clear)();
            return None;
        }
        // An assigned field is the attribute itself; an unassigned one is NULL, where the
        // attribute is None (errcheck) or may come from the class (argtypes, restype).
        let raw_errcheck = api::word(callable, FUNCPTR_ERRCHECK);
        let raw_argtypes = api::word(callable, FUNCPTR_ARGTYPES);
        let raw_restype = api::word(callable, FUNCPTR_RESTYPE);
        let ok = (raw_errcheck == errcheck as usize
            || (raw_errcheck == 0 && errcheck as usize == api.none))
            && (raw_argtypes == 0 || raw_argtypes == argtypes)
            && (raw_restype == 0 || raw_restype == restype);
        (api.decref)(errcheck);
        if !ok {
            FUNCPTR_FIELDS_WRONG.store(true, Ordering::Relaxed);
            crate::runtime::debug(
                "ctypes function fields not where expected: restype declarations read from attributes",
            );
            return None;
        }
        Some(raw_restype)
    }
}

/// Whether a ctypes function object has no `argtypes`, and whether its result is read through
/// the default `c_int` restype — one never declared: a `restype` assigned to the function
/// (`c_int` included) and one its prototype gives (`CFUNCTYPE(c_int, ...)`) are declarations.
/// The `restype` attribute cannot tell: a library's functions (class `_FuncPtr`) inherit the
/// library's default `c_int` from their class, and ctypes returns it for an unassigned function
/// just as for one assigned `c_int`; the object's own field can (see [`own_restype`]).
///
/// # Safety
/// GIL held; `callable` a live object.
pub(super) unsafe fn undeclared(api: &Api, callable: usize) -> (bool, bool) {
    // SAFETY: per the contract; new references are released.
    unsafe {
        let argtypes = (api.getattr)(callable as *mut _, c"argtypes".as_ptr());
        if argtypes.is_null() {
            (api.err_clear)();
            return (false, false);
        }
        let no_argtypes = argtypes as usize == api.none;
        // A ctypes function is being called, so `_ctypes` is loaded.
        site_rules::name_ctypes_internals(api);
        let restype = (api.getattr)(callable as *mut _, c"restype".as_ptr());
        let ctypes = (api.import_module)(c"ctypes".as_ptr());
        let mut default_restype = false;
        // Only a library's function has the library's default; a prototype declares its restype.
        let per_library = api::type_name_ends_with(api::type_of(callable), b"_FuncPtr");
        if per_library && !restype.is_null() && !ctypes.is_null() {
            let c_int = (api.getattr)(ctypes, c"c_int".as_ptr());
            if !c_int.is_null() && c_int == restype {
                // Assigned c_int, or left at the default: the object's own field tells.
                default_restype = own_restype(api, callable, argtypes as usize, restype as usize)
                    != Some(restype as usize);
            }
            if !c_int.is_null() {
                (api.decref)(c_int);
            }
        }
        (api.decref)(argtypes);
        for o in [restype, ctypes] {
            if !o.is_null() {
                (api.decref)(o);
            }
        }
        (api.err_clear)();
        (no_argtypes, default_restype)
    }
}

/// Where the innermost Python frame of this thread is: its frame, code object and instruction.
#[derive(Clone, Copy)]
pub struct Position {
    frame: usize,
    pub code: usize,
    pub ip: usize,
}

/// The position of the Python line calling a foreign function now, if there is one. GIL held.
///
/// # Safety
/// GIL held, on a thread with a Python thread state.
#[inline(always)]
pub unsafe fn current_position(api: &Api) -> Option<Position> {
    // SAFETY: per the contract. The innermost frame of a thread calling a foreign function
    // from Python is that Python function's own, running frame: complete and owned by the
    // thread, so the checks `position` makes for frames up the stack are not needed here.
    unsafe {
        let frame = current_frame(api)?;
        let l = &api.layout;
        let code = api::word(frame, l.f_code) & !api::EXECUTABLE_TAGS;
        if code == 0 {
            return None;
        }
        let ip = if l.f_owner.is_some() {
            api::word(frame, l.f_ip)
        } else {
            *((frame + l.f_ip) as *const i32) as usize
        };
        Some(Position { frame, code, ip })
    }
}

/// The site of the Python line calling `callable` now (id 0 when unknown): the innermost frame,
/// or past pass-through frames the first one that is not. GIL held.
///
/// # Safety
/// GIL held, on a thread with a Python thread state; `callable` live.
#[inline(always)]
pub unsafe fn current_site(api: &Api, callable: usize) -> Site {
    // SAFETY: per the contract.
    unsafe {
        match current_position(api) {
            Some(p) => site_at(api, p, callable),
            None => Site::UNKNOWN,
        }
    }
}

/// The site of a call made at `p`, this thread's innermost position (see [`current_site`]).
///
/// # Safety
/// As [`current_site`]; `p` from [`current_position`] now.
#[inline(always)]
pub unsafe fn site_at(api: &Api, p: Position, callable: usize) -> Site {
    let Position { frame, code, ip } = p;
    // SAFETY: per the contract.
    unsafe {
        // The home slot first (nearly always the one): it carries the position's inline cache.
        let home = &SITES[slot_of(code, ip)];
        let (id, cache) =
            if home.code.load(Ordering::Relaxed) == code && home.ip.load(Ordering::Relaxed) == ip {
                (home.id.load(Ordering::Relaxed), Some(&home.stats))
            } else {
                (intern(api, code, ip, callable), None)
            };
        if id & PASS_THROUGH == 0 {
            return Site { id, cache };
        }
        Site {
            id: caller_site(api, frame, id & !PASS_THROUGH, callable),
            cache: None,
        }
    }
}

/// The site of a call made in a pass-through frame (`via`, the innermost's site): the first
/// frame up the stack that is not one, else the innermost after all.
///
/// # Safety
/// As [`current_site`]; `frame` is this thread's innermost frame.
#[cold]
#[inline(never)]
unsafe fn caller_site(api: &Api, frame: usize, via: u32, callable: usize) -> u32 {
    // SAFETY: per the contract; the chain ends with a null `previous`, and `position` skips
    // frames that are not (yet) Python code.
    unsafe {
        let mut frame = api::word(frame, api.layout.f_back);
        for _ in 0..256 {
            if frame == 0 {
                break;
            }
            if let Some((code, ip)) = position(api, frame) {
                let id = intern(api, code, ip, callable);
                if id & PASS_THROUGH == 0 {
                    let through = &THROUGH[id as usize & (SITE_SLOTS - 1)];
                    if through.load(Ordering::Relaxed) == 0 {
                        through.store(via, Ordering::Relaxed);
                    }
                    return id;
                }
            }
            frame = api::word(frame, api.layout.f_back);
        }
    }
    via
}

/// Puts `--site-skip` patterns in force (a new attach session may bring others): the pass-through
/// bit of every position seen so far is decided again, and what sites were reached through is
/// forgotten. Call with recording off.
pub fn set_site_skip(patterns: &[String]) {
    if !site_rules::set_skip_patterns(patterns) {
        return;
    }
    let infos = DESCRIPTIONS.lock();
    for s in SITES.iter() {
        if s.code.load(Ordering::Acquire) == 0 {
            continue;
        }
        let id = s.id.load(Ordering::Relaxed) & !PASS_THROUGH;
        if let Some(info) = (id as usize).checked_sub(1).and_then(|i| infos.get(i)) {
            s.id.store(id | pass_bit(info), Ordering::Relaxed);
        }
    }
    for t in THROUGH.iter() {
        t.store(0, Ordering::Relaxed);
    }
    // A position cached as its own site may be passed through now.
    crate::record::recorder::each_thread(|r| r.python.forget_last_call());
}

/// The whole Python stack of this thread, outermost first, interned. GIL held.
///
/// # Safety
/// GIL held, on a thread with a Python thread state.
/// The thread's last sampled stack (`last`) answers when the stack is the same: the walk
/// compares each site with it as it goes, with no look-up in the shared table and no allocation;
/// only a stack that differs is walked again to be interned.
///
/// # Safety
/// GIL held, on a thread with a Python thread state.
pub unsafe fn current_stack(api: &Api, last: &LastStack) -> u32 {
    let (mut n, mut same) = (0, true);
    // SAFETY: per the contract.
    unsafe {
        walk_stack(api, |site| {
            same = same && last.site(n) == Some(site);
            n += 1;
        })
    };
    if same {
        if let Some(id) = last.id_if_len(n) {
            return id;
        }
    }
    let mut sites = Vec::with_capacity(n);
    // SAFETY: per the contract.
    unsafe { walk_stack(api, |site| sites.push(site)) };
    let outermost_first: Vec<u32> = sites.iter().rev().copied().collect();
    let id = {
        let mut guard = STACKS.lock();
        let map = guard.get_or_insert_with(HashMap::new);
        let next = map.len() as u32;
        *map.entry(outermost_first).or_insert(next)
    };
    last.note(&sites, id);
    id
}

/// Calls `each` with the site of every frame of this thread's stack, innermost first, at most
/// [`STACK_DEPTH`].
///
/// # Safety
/// GIL held, on a thread with a Python thread state.
#[inline(always)]
unsafe fn walk_stack(api: &Api, mut each: impl FnMut(u32)) {
    let mut n = 0;
    // SAFETY: per the contract; the chain ends with a null `previous`.
    unsafe {
        let mut frame = current_frame(api).unwrap_or(0);
        while frame != 0 && n < STACK_DEPTH {
            if let Some((code, ip)) = position(api, frame) {
                each(intern(api, code, ip, 0) & !PASS_THROUGH);
                n += 1;
            }
            frame = api::word(frame, api.layout.f_back);
        }
    }
}

/// Flags of a site: bit 0 no argtypes, bit 1 default restype.
#[inline(always)]
pub fn site_flags(site: u32) -> u8 {
    FLAGS[site as usize & (SITE_SLOTS - 1)].load(Ordering::Relaxed)
}

/// The innermost pass-through frame a site's calls were made in, when they were.
pub fn site_through(site: u32) -> Option<Frame> {
    let via = THROUGH.get(site as usize)?.load(Ordering::Relaxed);
    describe_site(via)
}

pub fn describe_site(site: u32) -> Option<Frame> {
    if site == 0 {
        return None;
    }
    DESCRIPTIONS
        .lock()
        .get(site as usize - 1)
        .map(|i| i.frame.clone())
}

/// Every interned frame (site id n at index n-1) and stack (by id), for the profile.
/// Stacks are read first: every site a stack holds was interned before the stack, so each is
/// among the frames read after.
pub fn frames_and_stacks() -> (Vec<Frame>, Vec<Vec<u32>>) {
    let stacks = {
        let guard = STACKS.lock();
        let mut stacks: Vec<Vec<u32>> = vec![Vec::new(); guard.as_ref().map_or(0, |m| m.len())];
        if let Some(m) = guard.as_ref() {
            for (sites, id) in m {
                stacks[*id as usize] = sites.iter().filter(|s| **s != 0).map(|s| s - 1).collect();
            }
        }
        stacks
    };
    let frames: Vec<Frame> = DESCRIPTIONS
        .lock()
        .iter()
        .map(|i| i.frame.clone())
        .collect();
    (frames, stacks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::recorder;

    /// A position's cached pair serves the thread that owns it, for its C function: another
    /// function, or another thread, misses (and looks the pair up in its own table).
    #[test]
    fn a_position_cache_serves_its_own_thread_and_function_only() {
        let cell: &'static AtomicPtr<CallStats> = Box::leak(Box::new(AtomicPtr::default()));
        let site = Site {
            id: 9,
            cache: Some(cell),
        };
        let rec = recorder::current().unwrap();
        let stats = rec.stats(0x4242, 9, |_| false).unwrap();
        assert!(site.cached(0x4242, rec).is_none(), "empty");
        site.remember(stats);
        assert!(std::ptr::eq(site.cached(0x4242, rec).unwrap(), stats));
        assert!(site.cached(0x4343, rec).is_none(), "another C function");
        let cell_addr = cell as *const AtomicPtr<CallStats> as usize;
        let other_thread = std::thread::spawn(move || {
            // SAFETY: the cell is leaked, so it lives as long as the process.
            let cell = unsafe { &*(cell_addr as *const AtomicPtr<CallStats>) };
            let site = Site {
                id: 9,
                cache: Some(cell),
            };
            site.cached(0x4242, recorder::current().unwrap()).is_none()
        });
        assert!(other_thread.join().unwrap(), "another thread's recorder");
        let elsewhere = rec.stats(0x4242, 10, |_| false).unwrap();
        site.remember(elsewhere);
        assert!(
            std::ptr::eq(site.cached(0x4242, rec).unwrap(), stats),
            "another site's pair is not cached here"
        );
        assert!(
            Site::known(9).cached(0x4242, rec).is_none(),
            "no cache, no hit"
        );
    }
}
