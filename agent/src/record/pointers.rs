//! Pointer flow: the pointer values C functions return and the functions they are passed to
//! afterwards, from which the analyzer finds what retires each allocator's objects (the leak
//! advice) — by the flow of values, never by the functions' names.
//!
//! The `ffi_call` hook reports, for a function whose signature has a pointer in it (decided from
//! its cif once per (function, site) pair and kept in the pair's [`CallStats::ptr_sig`], so a call
//! without one pays a flag test), each non-null pointer it returned ([`made`]) and each pointer
//! argument value ([`passed`]). One table, shared by every thread, maps a live value to the
//! function that made it, the site of the making call and the last function it was passed to.
//! When a function returns a value the table already holds, the heap handed that address out
//! again: the old object was freed, after its last function — counted per (allocator, last
//! function) as `reused`, the strongest sign that the last function frees. An object passed on
//! after a function counts `continued` for it: a function that frees is not followed by another
//! use.
//!
//! Bounded and lock-free: a fixed table of [`CAP`] live values at most (twice as many slots,
//! linear probing, a key claimed by compare-and-swap, at most [`MAX_PROBE`] slots looked at); no
//! lock, no allocation, no syscall. Past the cap, values are sampled by address hash — one in
//! `2^shift`, the shift raised by one each time the cap is reached, values outside the new sample
//! dropped — and every count is weighted by the rate it was made at, so figures stay estimates of
//! the whole (the profile says so: `pointer_flow.sampled`, `sample_every`).
//!
//! Item 2 of issue 13 rides on the same hook: a value a function returned through ctypes'
//! default `c_int` result (no `restype` declared) that comes back, sign-extended from 32 bits, in
//! a pointer argument, is a pointer cut to 32 bits ([`int_returned`], checked in [`passed`]).

mod summary;

use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

pub use summary::summary;

/// The most live values tracked at once.
pub const CAP: usize = 64 * 1024;
const SLOTS: usize = 2 * CAP;
const SLOT_BITS: u32 = SLOTS.trailing_zeros();
/// Slots a look-up or an insertion looks at, at most.
const MAX_PROBE: usize = 32;
/// A key whose value was dropped (sampling): a look-up goes past it, an insertion may reuse it.
const TOMB: usize = 1;

/// [`CallStats::ptr_sig`] bits: decided (the others are meaningful), returns a pointer, takes a
/// pointer, returns ctypes' default `c_int` (no `restype` declared) — the bits a call acts on are
/// [`SIG_ACTIVE`].
pub const SIG_KNOWN: u8 = 1;
pub const SIG_RET_PTR: u8 = 2;
pub const SIG_ARG_PTR: u8 = 4;
pub const SIG_RET_INT: u8 = 8;
pub const SIG_ACTIVE: u8 = SIG_RET_PTR | SIG_ARG_PTR | SIG_RET_INT;

/// A tracked value (0: empty, [`TOMB`]: dropped) and its entry: allocator id (bits 0-15), making
/// site (16-31), last function (32-47). Side by side, so a look-up needs one base address.
struct Slot {
    key: AtomicUsize,
    val: AtomicU64,
}

/// Function ids: the address of id `i` in slot `i - 1` (0 is "none").
const FUNC_SLOTS: usize = 4096;

/// Counters per (kind, function, function): key `kind << 32 | a << 16 | b`.
const PAIR_SLOTS: usize = 8192;
const FLOW: u64 = 1;
const TRUNC: u64 = 2;
struct Pair {
    key: AtomicU64,
    /// FLOW: objects retired by address reuse after `b`; TRUNC: values passed back.
    first: AtomicU64,
    /// FLOW: objects passed on after `b`.
    second: AtomicU64,
}

/// Recent results read as `c_int` that looked like no small number: value → function id.
const INT_SLOTS: usize = 4096;

/// Every table of the flow, ~2.3 MiB, allocated (zeroed) at the first pair with a pointer in its
/// signature ([`fn_id`]) and never freed: a program with none maps nothing, and the agent's own
/// image stays the size it was (a larger one moves where the interpreter's allocator arenas land,
/// which alone changed the float loop's instructions in `_PyObject_Free`).
struct Tables {
    table: [Slot; SLOTS],
    funcs: [AtomicUsize; FUNC_SLOTS],
    pairs: [Pair; PAIR_SLOTS],
    int_keys: [AtomicU64; INT_SLOTS],
    int_funcs: [AtomicU16; INT_SLOTS],
}

static TABLES: AtomicPtr<Tables> = AtomicPtr::new(std::ptr::null_mut());

/// The tables once allocated.
fn tables() -> Option<&'static Tables> {
    // SAFETY: a non-null pointer is a leaked, never freed Tables.
    unsafe { TABLES.load(Ordering::Acquire).as_ref() }
}

/// The tables, on a path that runs only for a pair whose signature has a pointer in it: such a
/// pair has a function id, which [`fn_id`] gives only once the tables exist.
#[inline(always)]
fn t() -> &'static Tables {
    // SAFETY: per the above, the pointer was set (never to be cleared) before this call.
    unsafe { &*TABLES.load(Ordering::Relaxed) }
}

/// Allocates the tables if nobody has yet (first sight of a pointer signature; off the per-call
/// path). False when there is no memory for them.
#[cold]
fn ensure_tables() -> bool {
    if tables().is_some() {
        return true;
    }
    let layout = std::alloc::Layout::new::<Tables>();
    // SAFETY: Tables is made of atomics only, for which all-zero bytes are a valid value;
    // the layout is not zero-sized.
    let fresh = unsafe { std::alloc::alloc_zeroed(layout) } as *mut Tables;
    if fresh.is_null() {
        return false;
    }
    if TABLES
        .compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // SAFETY: allocated just above with this layout and never shared.
        unsafe { std::alloc::dealloc(fresh as *mut u8, layout) };
    }
    true
}

/// Live values in the table.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// One value in `1 << SHIFT` is tracked.
static SHIFT: AtomicU32 = AtomicU32::new(0);
/// Values returned that found no room within `MAX_PROBE` slots.
static SKIPPED: AtomicU64 = AtomicU64::new(0);
static ANY_INT: AtomicBool = AtomicBool::new(false);

/// Whether pairs with pointers in their signature join the flow (`FFIPROF_POINTERS=0` turns it
/// off, to measure what it costs): read when a pair's signature is decided.
pub static ENABLED: AtomicBool = AtomicBool::new(true);

/// Moves on at every change of the flow that can turn a [`surely_unchanged`] answer false (a
/// value made or handed out again, a last function changed, the first `c_int` result kept,
/// sampling raised, a reset), after the change. A pair that found its pointer argument changed
/// nothing at epoch `e` may skip the look-up while the same value comes at the same epoch
/// (`CallStats::ptr_quiet`); it starts at 1, so a zeroed cache never matches.
static EPOCH: AtomicU64 = AtomicU64::new(1);

/// The flow's epoch (see [`EPOCH`]): read before a look-up whose answer is to be cached.
#[inline(always)]
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

#[inline(always)]
fn changed() {
    EPOCH.fetch_add(1, Ordering::AcqRel);
}

#[inline(always)]
fn mix(v: u64) -> u64 {
    let h = (v ^ (v >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// A value's hash: its address in 16-byte units (malloc's alignment), low 32 bits, times the
/// 32-bit golden-ratio constant (Fibonacci hashing: consecutive objects spread over the table; an
/// immediate operand, so the look-up holds no register for it).
#[inline(always)]
fn vhash(v: usize) -> u32 {
    ((v >> 4) as u32).wrapping_mul(0x9e37_79b1)
}

/// A value's first slot: the hash's top bits.
#[inline(always)]
fn home(h: u32) -> usize {
    (h >> (32 - SLOT_BITS)) as usize
}

/// The largest sampling shift: one value in 4096.
const MAX_SHIFT: u32 = 12;

/// Whether a value is in the sample at `shift`: hash bits below the slot's (each depends on the
/// address bits below it).
#[inline(always)]
fn in_sample(h: u32, shift: u32) -> bool {
    (h >> 3) & ((1u32 << shift) - 1) == 0
}

#[inline(always)]
fn entry(f: u16, site: u16, last: u16) -> u64 {
    f as u64 | (site as u64) << 16 | (last as u64) << 32
}

#[inline(always)]
fn last_of(e: u64) -> u16 {
    (e >> 32) as u16
}

/// The id of function `addr` in the flow tables (0 when the table is full): once per pair, at
/// first sight.
#[cold]
pub fn fn_id(addr: usize) -> u16 {
    if addr == 0 || !ensure_tables() {
        return 0;
    }
    let mut i = mix(addr as u64) as usize % FUNC_SLOTS;
    for _ in 0..FUNC_SLOTS {
        match t().funcs[i].compare_exchange(0, addr, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return (i + 1) as u16,
            Err(a) if a == addr => return (i + 1) as u16,
            Err(_) => i = (i + 1) % FUNC_SLOTS,
        }
    }
    0
}

fn fn_addr(id: u16) -> usize {
    match id {
        0 => 0,
        i => tables().map_or(0, |t| t.funcs[i as usize - 1].load(Ordering::Acquire)),
    }
}

/// The counters of (kind, a, b), created on first use; None when their table is full.
fn pair(kind: u64, a: u16, b: u16) -> Option<&'static Pair> {
    let key = kind << 32 | (a as u64) << 16 | b as u64;
    let mut i = mix(key) as usize % PAIR_SLOTS;
    for _ in 0..PAIR_SLOTS {
        let p = &t().pairs[i];
        match p
            .key
            .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return Some(p),
            Err(k) if k == key => return Some(p),
            Err(_) => i = (i + 1) % PAIR_SLOTS,
        }
    }
    None
}

/// Function `f` returned the non-null pointer `v` (not one of the call's own pointer
/// arguments), at `site`.
#[inline]
pub fn made(v: usize, f: u16, site: u16) {
    let h = vhash(v);
    let shift = SHIFT.load(Ordering::Relaxed);
    if !in_sample(h, shift) {
        return;
    }
    let new = entry(f, site, 0);
    let mut i = home(h);
    let mut free = None;
    for _ in 0..MAX_PROBE {
        let k = t().table[i].key.load(Ordering::Acquire);
        if k == v {
            // Handed out again: the object that had this address was freed after its last
            // function.
            let old = t().table[i].val.swap(new, Ordering::AcqRel);
            changed();
            if let Some(p) = pair(FLOW, old as u16, last_of(old)) {
                p.first.fetch_add(1 << shift, Ordering::Relaxed);
            }
            return;
        }
        if k == TOMB && free.is_none() {
            free = Some(i);
        }
        if k == 0 {
            free.get_or_insert(i);
            break;
        }
        i = (i + 1) & (SLOTS - 1);
    }
    let Some(slot) = free else {
        SKIPPED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if LIVE.load(Ordering::Relaxed) >= CAP {
        raise_shift(shift);
        if !in_sample(h, shift + 1) {
            return;
        }
    }
    let expected = t().table[slot].key.load(Ordering::Relaxed);
    if (expected == 0 || expected == TOMB)
        && t().table[slot]
            .key
            .compare_exchange(expected, v, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    {
        t().table[slot].val.store(new, Ordering::Release);
        LIVE.fetch_add(1, Ordering::Relaxed);
        changed();
    } else {
        SKIPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// The table is full at `shift`: one value in twice as many is kept from now on, the others
/// dropped (by the one thread that raises it).
#[cold]
#[inline(never)]
fn raise_shift(shift: u32) {
    if shift >= MAX_SHIFT
        || SHIFT
            .compare_exchange(shift, shift + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    for slot in &t().table {
        let v = slot.key.load(Ordering::Acquire);
        if v > TOMB && !in_sample(vhash(v), shift + 1) {
            slot.key.store(TOMB, Ordering::Release);
            LIVE.fetch_sub(1, Ordering::Relaxed);
        }
    }
    changed();
}

/// Value `v` was passed in a pointer argument to function `g`.
#[inline(always)]
pub fn passed(v: usize, g: u16) {
    if v <= TOMB {
        return;
    }
    let mut i = home(vhash(v));
    for _ in 0..MAX_PROBE {
        let k = t().table[i].key.load(Ordering::Relaxed);
        if k == v {
            return moved_on(i, g);
        }
        if k == 0 {
            break;
        }
        i = (i + 1) & (SLOTS - 1);
    }
    if ANY_INT.load(Ordering::Relaxed) {
        truncated_back(v, g);
    }
}

/// Whether [`passed`]`(v, g)` surely changes nothing (`g` the function id held in `g`): `v`'s
/// first slot is empty (untracked) and it cannot be a pointer cut to 32 bits, or its first slot
/// holds it with `g` its last function already. Looks at one slot, calls nothing and writes nothing, so a
/// caller that only reads can stay a leaf function (no stack frame); false sends the caller to
/// [`passed`], which probes further.
#[inline(always)]
pub fn surely_unchanged(v: usize, g: &AtomicU16) -> bool {
    // (A null value needs no test of its own: its slot is empty or holds another value, and a
    // false answer only sends it to `passed`, which ignores it.) One slot address, and `g` read
    // only when the slot holds `v`: the look-up keeps three values at most in registers.
    let slot = &t().table[home(vhash(v))];
    let k = slot.key.load(Ordering::Relaxed);
    if k == 0 {
        return (v as u64 as i32) as i64 as u64 != v as u64 || !ANY_INT.load(Ordering::Relaxed);
    }
    k == v && last_of(slot.val.load(Ordering::Relaxed)) == g.load(Ordering::Relaxed)
}

/// Tracked value in slot `i` passed to `g`: `g` is its last function now, and the one before
/// was not its end.
#[inline(never)]
fn moved_on(i: usize, g: u16) {
    let old = t().table[i].val.load(Ordering::Acquire);
    let last = last_of(old);
    if last == g {
        return;
    }
    t().table[i]
        .val
        .store(old & !(0xffff << 32) | (g as u64) << 32, Ordering::Release);
    changed();
    if last != 0 {
        if let Some(p) = pair(FLOW, old as u16, last) {
            p.second
                .fetch_add(1 << SHIFT.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// Function `f`, with no `restype` declared, returned `r` through ctypes' default `c_int`: kept
/// when it could be the low half of an address (not a small number), to be recognized if it
/// comes back as a pointer.
#[inline]
pub fn int_returned(r: i32, f: u16) {
    if (r as i64).unsigned_abs() < 0x1_0000 {
        return;
    }
    let v = r as i64 as u64;
    let i = mix(v) as usize % INT_SLOTS;
    t().int_funcs[i].store(f, Ordering::Relaxed);
    t().int_keys[i].store(v, Ordering::Release);
    if !ANY_INT.load(Ordering::Relaxed) {
        ANY_INT.store(true, Ordering::Relaxed);
        changed();
    }
}

/// A pointer argument `v` to `g` that is no tracked value: when its high half is only the sign
/// of its low half, and a result read as `c_int` had that value, the pointer was cut to 32 bits.
#[cold]
#[inline(never)]
fn truncated_back(v: usize, g: u16) {
    let v = v as u64;
    if (v as i32) as i64 as u64 != v {
        return;
    }
    let i = mix(v) as usize % INT_SLOTS;
    if t().int_keys[i].load(Ordering::Acquire) != v {
        return;
    }
    let f = t().int_funcs[i].load(Ordering::Relaxed);
    if let Some(p) = pair(TRUNC, f, g) {
        p.first.fetch_add(1, Ordering::Relaxed);
    }
}

/// Forgets every value and count (a new attach session, a forked child). Function ids stay:
/// the pairs' statistics keep theirs.
pub fn reset() {
    ANY_INT.store(false, Ordering::Relaxed);
    LIVE.store(0, Ordering::Relaxed);
    SHIFT.store(0, Ordering::Relaxed);
    SKIPPED.store(0, Ordering::Relaxed);
    let Some(t) = tables() else {
        changed();
        return;
    };
    for slot in &t.table {
        slot.key.store(0, Ordering::Relaxed);
        slot.val.store(0, Ordering::Relaxed);
    }
    for p in &t.pairs {
        p.key.store(0, Ordering::Relaxed);
        p.first.store(0, Ordering::Relaxed);
        p.second.store(0, Ordering::Relaxed);
    }
    for (k, f) in t.int_keys.iter().zip(t.int_funcs.iter()) {
        k.store(0, Ordering::Relaxed);
        f.store(0, Ordering::Relaxed);
    }
    changed();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables are global: the tests run one after another under this lock, each from reset.
    static SERIAL: parking_lot::Mutex<()> = parking_lot::const_mutex(());

    fn ending(f: u16, last: u16) -> (u64, u64, u64) {
        let mut live = 0;
        for slot in &t().table {
            let e = slot.val.load(Ordering::Relaxed);
            if slot.key.load(Ordering::Relaxed) > TOMB && e as u16 == f && last_of(e) == last {
                live += 1;
            }
        }
        let p = pair(FLOW, f, last).unwrap();
        (
            live,
            p.first.load(Ordering::Relaxed),
            p.second.load(Ordering::Relaxed),
        )
    }

    #[test]
    fn objects_end_where_they_were_last_passed_and_reuse_confirms() {
        let _g = SERIAL.lock();
        reset();
        let (make, useit, give) = (fn_id(0x1000), fn_id(0x2000), fn_id(0x3000));
        assert_ne!(make, useit);
        assert_eq!(fn_id(0x1000), make, "one id per address");
        // 10 objects, each used; 4 given back; then 2 addresses handed out again.
        for o in 0..10usize {
            made(0x5000_0000 + o * 32, make, 7);
            passed(0x5000_0000 + o * 32, useit);
            passed(0x5000_0000 + o * 32, useit);
        }
        for o in 0..4usize {
            passed(0x5000_0000 + o * 32, give);
        }
        made(0x5000_0000, make, 8);
        made(0x5000_0020, make, 8);
        // Live after `give`: 2 (two were reused); reused after it: 2; never followed.
        assert_eq!(ending(make, give), (2, 2, 0));
        // After `useit`: 6 live, none reused, 4 went on (to `give`).
        assert_eq!(ending(make, useit), (6, 0, 4));
        // Never passed: the 2 new objects.
        assert_eq!(ending(make, 0).0, 2);
        // A value nobody made is ignored.
        passed(0x7777_0000, give);
        assert_eq!(LIVE.load(Ordering::Relaxed), 10);
    }

    /// The epoch moves at every change a pair's cache of a quiet argument could miss, and at no
    /// look-up that changes nothing (else the cache would never hold).
    #[test]
    fn the_epoch_moves_with_every_change_and_only_then() {
        let _g = SERIAL.lock();
        reset();
        let (make, useit, other) = (fn_id(0x5100), fn_id(0x5200), fn_id(0x5300));
        let e = std::cell::Cell::new(epoch());
        let moved = |what: &str| {
            assert_ne!(epoch(), e.replace(epoch()), "{what}: the epoch stayed");
        };
        made(0x6000_0000, make, 1);
        moved("a value made");
        passed(0x6000_0000, useit);
        moved("a last function set");
        let still = epoch();
        passed(0x6000_0000, useit);
        passed(0x6100_0000, useit);
        assert!(surely_unchanged(0x6000_0000, &AtomicU16::new(useit)));
        assert_eq!(epoch(), still, "nothing changed: the epoch stays");
        passed(0x6000_0000, other);
        moved("the last function changed");
        made(0x6000_0000, make, 2);
        moved("an address handed out again");
        int_returned(0x1234_5678, make);
        moved("the first c_int result kept");
        int_returned(0x1234_5679, make);
        assert_eq!(epoch(), e.get(), "later c_int results change no answer");
        reset();
        moved("a reset");
    }

    #[test]
    fn past_the_cap_values_are_sampled_and_counts_weighted() {
        let _g = SERIAL.lock();
        reset();
        let f = fn_id(0x1100);
        for o in 0..(CAP + CAP / 2) {
            made(0x1_0000_0000 + o * 16, f, 1);
        }
        let shift = SHIFT.load(Ordering::Relaxed);
        assert!(shift >= 1, "sampling began");
        let live = LIVE.load(Ordering::Relaxed);
        assert!(live <= CAP, "{live}");
        // Every value kept is in the sample, and the weighted count estimates all of them.
        let estimate = (live as u64) << shift;
        let all = (CAP + CAP / 2) as u64;
        assert!(estimate.abs_diff(all) < all / 10, "{estimate} vs {all}");
        reset();
        assert_eq!(SHIFT.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_c_int_result_passed_back_as_a_pointer_is_cut() {
        let _g = SERIAL.lock();
        reset();
        let (t, g) = (fn_id(0x4100), fn_id(0x4200));
        // A pointer 0x7f12_9234_5678 read as c_int: its low half, negative, sign-extended.
        let cut = 0x7f12_9234_5678u64 as u32 as i32;
        int_returned(cut, t);
        int_returned(12, t); // a small number is never taken for one
        passed(cut as i64 as u64 as usize, g);
        passed(12, g);
        passed(0x7f12_9234_5678, g); // the whole pointer is not the cut one
        assert_eq!(pair(TRUNC, t, g).unwrap().first.load(Ordering::Relaxed), 1);
    }
}
