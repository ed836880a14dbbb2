//! The probe's clock: the TSC where it is invariant (one `rdtsc`, ~13 ns here), else
//! `CLOCK_MONOTONIC` through the vDSO (~36 ns). Ticks are converted to nanoseconds only when a
//! profile is written, from a calibration against `CLOCK_MONOTONIC` over the whole run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static USE_TSC: AtomicBool = AtomicBool::new(false);
static START_TICKS: AtomicU64 = AtomicU64::new(0);
static START_MONO_NS: AtomicU64 = AtomicU64::new(0);
static START_UNIX_NS: AtomicU64 = AtomicU64::new(0);
/// The tick rate of the last calibration over at least 20 ms (f64 bits; 0 = none yet).
static KNOWN_NS_PER_TICK: AtomicU64 = AtomicU64::new(0);

/// A clock reading in ticks (TSC cycles, or nanoseconds when the TSC is not usable).
#[inline(always)]
pub fn now() -> u64 {
    if USE_TSC.load(Ordering::Relaxed) {
        // SAFETY: rdtsc is available on every x86-64 CPU; it has no memory effects.
        unsafe { core::arch::x86_64::_rdtsc() }
    } else {
        monotonic_ns()
    }
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // Wrapping: no overflow check, so no panic, in the hooks that read the clock between pushing
    // a call's context and making the call.
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Whether the CPU says its TSC is invariant (CPUID 0x8000_0007, EDX bit 8).
fn tsc_is_invariant() -> bool {
    use core::arch::x86_64::__cpuid;
    // CPUID is available on every x86-64 CPU; leaf 0x8000_0000 reports the highest extended
    // leaf, which we check before asking for 0x8000_0007.
    if __cpuid(0x8000_0000).eax < 0x8000_0007 {
        return false;
    }
    __cpuid(0x8000_0007).edx & (1 << 8) != 0
}

/// Chooses the clock and records the start of the run. `FFIPROF_CLOCK=monotonic` forces the
/// fallback (to test it, or on machines whose TSC misbehaves despite CPUID).
pub fn init(force_monotonic: bool) {
    USE_TSC.store(!force_monotonic && tsc_is_invariant(), Ordering::Relaxed);
    restart();
}

/// Starts the run's time base anew (at init, and in a forked child).
pub fn restart() {
    let (mono, ticks) = paired_reading();
    START_MONO_NS.store(mono, Ordering::Relaxed);
    START_TICKS.store(ticks, Ordering::Relaxed);
    START_UNIX_NS.store(unix_ns(), Ordering::Relaxed);
}

/// The monotonic clock and the ticks at one moment: of a few tries, the monotonic reading most
/// tightly bracketed by two tick readings. Two plain reads in a row are far apart whenever the
/// thread is preempted between them, and a 4 ms preemption at one end of a 60 ms run made every
/// time in its profile 6 % long.
fn paired_reading() -> (u64, u64) {
    let mut best = (u64::MAX, 0, 0);
    for _ in 0..5 {
        let before = now();
        let mono = monotonic_ns();
        let after = now();
        let width = after.wrapping_sub(before);
        if width < best.0 {
            best = (width, mono, before + width / 2);
        }
    }
    (best.1, best.2)
}

pub fn clock_name() -> &'static str {
    if USE_TSC.load(Ordering::Relaxed) {
        "tsc"
    } else {
        "monotonic"
    }
}

/// Converts ticks to nanoseconds, measured against the monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Calibration {
    pub ns_per_tick: f64,
    /// Ticks a back-to-back pair of clock reads measures: what every timed interval over-counts.
    pub probe_ticks: u64,
    /// Ticks a native interval measures around an empty C function called through libffi: the
    /// probe plus libffi's own call sequence, which is not time inside the C function.
    pub native_floor_ticks: u64,
    /// Ticks a native interval measures around an empty C function called through the GOT
    /// trampoline (`hook::native`): the probe plus the trampoline's own steps between its two
    /// clock reads (restoring the argument registers, the jump, saving the return registers).
    pub got_floor_ticks: u64,
    pub start_unix_ns: u64,
    pub elapsed_ns: u64,
}

impl Calibration {
    pub fn ns(&self, ticks: u64) -> u64 {
        (ticks as f64 * self.ns_per_tick).round() as u64
    }

    pub fn probe_ns(&self) -> u64 {
        self.ns(self.probe_ticks)
    }

    pub fn native_floor_ns(&self) -> u64 {
        self.ns(self.native_floor_ticks.max(self.probe_ticks))
    }

    /// The floor of a native interval the GOT trampoline measured.
    pub fn got_floor_ns(&self) -> u64 {
        self.ns(self.got_floor_ticks.max(self.probe_ticks))
    }
}

/// Measures the tick rate over the run so far (at least 20 ms, spinning if the run is younger)
/// and the probe's own cost.
pub fn calibrate() -> Calibration {
    let start_mono = START_MONO_NS.load(Ordering::Relaxed);
    let start_ticks = START_TICKS.load(Ordering::Relaxed);
    let mut mono = monotonic_ns();
    // A forked child keeps its parent's rate (the TSC does not change with fork): no spinning
    // on the way out of a short-lived child, where exit or a signal is waiting for us.
    let known = f64::from_bits(KNOWN_NS_PER_TICK.load(Ordering::Relaxed));
    if known == 0.0 {
        while mono.saturating_sub(start_mono) < 20_000_000 {
            std::hint::spin_loop();
            mono = monotonic_ns();
        }
    }
    let (mono, ticks) = paired_reading();
    let elapsed_ns = mono.saturating_sub(start_mono);
    let ns_per_tick = if !USE_TSC.load(Ordering::Relaxed) {
        1.0
    } else if elapsed_ns >= 20_000_000 || known == 0.0 {
        let rate = elapsed_ns as f64 / (ticks.saturating_sub(start_ticks)).max(1) as f64;
        KNOWN_NS_PER_TICK.store(rate.to_bits(), Ordering::Relaxed);
        rate
    } else {
        known
    };
    Calibration {
        ns_per_tick,
        probe_ticks: probe_ticks(),
        native_floor_ticks: native_floor_ticks(),
        got_floor_ticks: got_floor_ticks(),
        start_unix_ns: START_UNIX_NS.load(Ordering::Relaxed),
        elapsed_ns,
    }
}

static NATIVE_FLOOR: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
static NATIVE_FLOOR_PROBE: std::sync::OnceLock<fn() -> u64> = std::sync::OnceLock::new();

/// Registers what measures the native floor (the hook layer's, which knows libffi); once per
/// process.
pub fn set_native_floor_probe(probe: fn() -> u64) {
    let _ = NATIVE_FLOOR_PROBE.set(probe);
}

static GOT_FLOOR: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
static GOT_FLOOR_PROBE: std::sync::OnceLock<fn() -> u64> = std::sync::OnceLock::new();

/// Registers what measures the GOT trampoline's floor (`hook::native`); once per process.
pub fn set_got_floor_probe(probe: fn() -> u64) {
    let _ = GOT_FLOOR_PROBE.set(probe);
}

/// The GOT trampoline's floor, measured at the first need (a split builtin's first sighting, or
/// the first snapshot) and the same ever after.
pub fn got_floor_ticks() -> u64 {
    *GOT_FLOOR.get_or_init(|| GOT_FLOOR_PROBE.get().map_or(0, |probe| probe()))
}

/// The GOT trampoline's floor if measured already, else 0 (the per-call path never measures).
#[inline(always)]
pub fn got_floor_ticks_known() -> u64 {
    GOT_FLOOR.get().copied().unwrap_or(0)
}

/// Measured once per process (the first snapshot), so every snapshot subtracts the same floor.
fn native_floor_ticks() -> u64 {
    *NATIVE_FLOOR.get_or_init(|| NATIVE_FLOOR_PROBE.get().map_or(0, |probe| probe()))
}

/// Median of back-to-back clock reads: the part of a measured interval that is the probe itself.
fn probe_ticks() -> u64 {
    let mut samples = [0u64; 501];
    for s in samples.iter_mut() {
        let a = now();
        let b = now();
        *s = b.wrapping_sub(a);
    }
    samples.sort_unstable();
    samples[samples.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(ns_per_tick: f64, probe_ticks: u64, native_floor_ticks: u64) -> Calibration {
        Calibration {
            ns_per_tick,
            probe_ticks,
            native_floor_ticks,
            got_floor_ticks: 0,
            start_unix_ns: 0,
            elapsed_ns: 0,
        }
    }

    #[test]
    fn ticks_become_nanoseconds_at_the_calibrated_rate_rounded() {
        // A 2.5 GHz TSC.
        let c = cal(0.4, 30, 100);
        assert_eq!(c.ns(0), 0);
        assert_eq!(c.ns(1), 0, "0.4 ns rounds down");
        assert_eq!(c.ns(2), 1, "0.8 ns rounds up");
        assert_eq!(c.ns(2_500_000_000), 1_000_000_000);
        assert_eq!(c.probe_ns(), 12);
        assert_eq!(c.native_floor_ns(), 40);
    }

    #[test]
    fn the_native_floor_is_never_less_than_the_probe() {
        // No libffi measured yet: a native interval still over-counts the probe's own reads.
        assert_eq!(cal(1.0, 25, 0).native_floor_ns(), 25);
        assert_eq!(cal(1.0, 25, 60).native_floor_ns(), 60);
    }

    /// The clocks themselves: an interval measured in ticks and converted with a calibration
    /// taken meanwhile is the interval `CLOCK_MONOTONIC` measured, on the TSC (when this CPU's
    /// is invariant) and on the fallback. (One test: the clock choice is process-wide.)
    #[test]
    fn a_calibrated_interval_is_the_monotonic_interval() {
        for force_monotonic in [false, true] {
            init(force_monotonic);
            let (t0, m0) = (now(), monotonic_ns());
            std::thread::sleep(std::time::Duration::from_millis(30));
            let c = calibrate();
            let (t1, m1) = (now(), monotonic_ns());
            let (measured, truth) = (c.ns(t1 - t0), m1 - m0);
            // The calibration spans at least 20 ms; each pair of reads may be a few µs apart.
            let tolerance = truth / 100 + 20_000;
            assert!(
                measured.abs_diff(truth) <= tolerance,
                "{} clock: {measured} ns measured, {truth} ns true",
                clock_name()
            );
            if force_monotonic {
                assert_eq!((clock_name(), c.ns_per_tick), ("monotonic", 1.0));
            }
            assert!(c.probe_ns() < 10_000, "{c:?}");
        }
    }
}
