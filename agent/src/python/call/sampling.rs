//! Which calls are timed and which take their whole stack: randomised countdowns, so that
//! periodic call patterns cannot alias with the sampling. Timing counts down per (function, site)
//! pair: its first [`ALWAYS_TIMED`] calls always, then one in `TIMING_EVERY`; stacks count down
//! per thread.

use std::sync::atomic::{AtomicU32, Ordering};

use super::{ThreadState, STACK_EVERY, TIMING_EVERY};
use crate::record::recorder::{CallStats, ALWAYS_TIMED};

/// Sampled timed calls (weighted) of a bracketed builtin's pair on a thread after which its
/// timing thins out ([`ThreadState::sample_pair_thinning`]): ~8 Ki calls at the default rate.
pub const THIN_AFTER: u64 = 1024;
/// How much rarer a thinned pair's timed calls are, and how many calls each stands for.
pub const THIN_WEIGHT: u32 = 16;

impl ThreadState {
    #[inline(always)]
    fn next_random(&self) -> u64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        if x == 0 {
            x = (self as *const Self as u64) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33
    }

    /// A randomised countdown: the gap is uniform in 1..=2N-1, so the mean is N and periodic
    /// call patterns cannot alias with the sampling.
    #[inline(always)]
    pub(crate) fn sample(&self, counter: &AtomicU32, every: u32) -> bool {
        if every <= 1 {
            // Every call: a countdown at 1 says so to `next_samples_soon` too. None: a countdown
            // that never runs out (nearly) says so to `skips_stack_next` with one compare.
            let pinned = if every == 1 { 1 } else { u32::MAX };
            if counter.load(Ordering::Relaxed) != pinned {
                counter.store(pinned, Ordering::Relaxed);
            }
            return every == 1;
        }
        let left = counter.load(Ordering::Relaxed);
        if left > 1 {
            counter.store(left - 1, Ordering::Relaxed);
            return false;
        }
        let gap = 1 + (self.next_random() % (2 * every as u64 - 1)) as u32;
        counter.store(gap, Ordering::Relaxed);
        true
    }

    /// Whether `sample(&self.stack_countdown, STACK_EVERY)` will say no, without moving the
    /// countdown: a lean path checks it before it commits to a call (then [`skip_stack`]). One
    /// compare: above 1 the countdown says no sample whatever the rate (`sample` pins it at 1
    /// for every call, near `u32::MAX` for none). It may say yes wrongly — at a rate of 0 before
    /// the thread's first `sample`, or once in 2³² calls — and the caller then asks `sample`.
    ///
    /// [`skip_stack`]: Self::skip_stack
    #[inline(always)]
    pub(crate) fn skips_stack_next(&self) -> bool {
        self.stack_countdown.load(Ordering::Relaxed) > 1
    }

    /// `sample(&self.stack_countdown, STACK_EVERY)` when `skips_stack_next` said no sample:
    /// the countdown moves on as `sample` would move it (at a rate of 0 it only counts down
    /// from its pin).
    #[inline(always)]
    pub(crate) fn skip_stack(&self) {
        let left = self.stack_countdown.load(Ordering::Relaxed);
        self.stack_countdown
            .store(left.wrapping_sub(1), Ordering::Relaxed);
    }

    /// Whether the next `sample(&self.stack_countdown, ..)` will say yes.
    #[inline(always)]
    pub(super) fn next_samples_stack(&self) -> bool {
        let every = STACK_EVERY.load(Ordering::Relaxed);
        every == 1 || (every > 1 && self.stack_countdown.load(Ordering::Relaxed) <= 1)
    }

    /// `next_samples_stack` once `sample` has run on this thread at the current rate, with one
    /// compare on the way out of nearly every call: the countdown is above 1 only when the next
    /// call does not sample (a rate of 1 keeps it at 1).
    #[inline(always)]
    pub(super) fn next_samples_soon(&self) -> bool {
        self.stack_countdown.load(Ordering::Relaxed) <= 1 && self.next_samples_stack()
    }

    /// Whether the next call of the pair `s` is timed, and whether as one of its first calls:
    /// (timed, first). One countdown per pair: its first [`ALWAYS_TIMED`] calls are all timed,
    /// then one in `TIMING_EVERY` at random. Which stratum a call is in is fixed here, before it
    /// runs, so the snapshot can add the first calls' times as they are and scale only the rest.
    ///
    /// The countdown is 0 only during the first calls (it starts at 0; every gap is at least 1),
    /// so telling them apart costs no look at the call count. When every call is timed there is
    /// nothing to scale and no stratum to keep apart.
    #[inline(always)]
    pub fn sample_pair(&self, s: &CallStats) -> (bool, bool) {
        let left = s.countdown.load(Ordering::Relaxed);
        if left > 1 {
            s.countdown.store(left - 1, Ordering::Relaxed);
            return (false, false);
        }
        let every = TIMING_EVERY.load(Ordering::Relaxed);
        if every == 1 {
            // Every call is timed: nothing is scaled, the first calls need no stratum of their own.
            return (true, false);
        }
        if left == 0 {
            return self.first_call(s);
        }
        s.countdown.store(self.gap(every), Ordering::Relaxed);
        (every != 0, false)
    }

    /// `sample_pair` for a bracketed builtin's pair, whose timed calls cost the most (four clock
    /// reads, the GOT trampoline's return-address swap), and which a loop calls millions of
    /// times: once its sampled stratum holds [`THIN_AFTER`] timed calls, it times one call in
    /// `TIMING_EVERY` × [`THIN_WEIGHT`] instead, each standing for [`THIN_WEIGHT`] (the weight
    /// is returned: (timed, first, weight)). The snapshot's scaling then weighs every sample by
    /// the inverse of the rate it was drawn at, so the estimate stays unbiased whatever the
    /// calls' times do over the run; it rests on fewer samples (after the switch, 1/16 as many:
    /// a million calls of one pair are still timed ~8.8 Ki times).
    /// The first thinned gap is drawn from the gaps' equilibrium distribution, as after the first
    /// calls, so every later call is timed with probability exactly 1/(N × weight) from the start.
    /// Counts stay exact. `untimed_next` and `count_untimed` apply as to `sample_pair`.
    #[inline(always)]
    pub fn sample_pair_thinning(&self, s: &CallStats) -> (bool, bool, u32) {
        let left = s.countdown.load(Ordering::Relaxed);
        if left > 1 {
            s.countdown.store(left - 1, Ordering::Relaxed);
            return (false, false, 1);
        }
        let every = TIMING_EVERY.load(Ordering::Relaxed);
        if left == 0 || every <= 1 {
            let (timed, first) = self.sample_pair(s);
            return (timed, first, 1);
        }
        // The call that ends a gap: it stands for the weight that gap was drawn with.
        let weight = s.gap_weight.load(Ordering::Relaxed).max(1);
        if weight == 1 && s.sampled.timed.get() + 1 >= THIN_AFTER {
            s.gap_weight.store(THIN_WEIGHT, Ordering::Relaxed);
            s.countdown.store(
                self.first_gap(u64::from(every) * u64::from(THIN_WEIGHT)),
                Ordering::Relaxed,
            );
        } else {
            s.countdown
                .store(self.gap(every.saturating_mul(weight)), Ordering::Relaxed);
        }
        (true, false, weight)
    }

    /// Whether `sample_pair(s)` would say (false, false) now, without moving the countdown.
    #[inline(always)]
    pub fn untimed_next(&self, s: &CallStats) -> bool {
        s.countdown.load(Ordering::Relaxed) > 1
    }

    /// `sample_pair(s)` when `untimed_next(s)` said so: the countdown moves on.
    #[inline(always)]
    pub fn count_untimed(&self, s: &CallStats) {
        let left = s.countdown.load(Ordering::Relaxed);
        s.countdown.store(left - 1, Ordering::Relaxed);
    }

    /// One of the pair's first calls (or an excluded pair's, which are never counted).
    #[cold]
    #[inline(never)]
    fn first_call(&self, s: &CallStats) -> (bool, bool) {
        if s.excluded {
            s.countdown.store(u32::MAX, Ordering::Relaxed);
            return (false, false);
        }
        let calls = s.calls.get();
        let every = TIMING_EVERY.load(Ordering::Relaxed);
        let next = if calls + 1 < ALWAYS_TIMED as u64 {
            0
        } else {
            self.first_gap(every as u64)
        };
        s.countdown.store(next, Ordering::Relaxed);
        if calls >= ALWAYS_TIMED as u64 {
            // Not a first call after all (only a pair the wrapper misjudged gets here).
            return (every != 0, false);
        }
        (true, true)
    }

    /// A gap uniform in 1..=2N-1 (mean N); never again for N = 0.
    #[inline(always)]
    fn gap(&self, every: u32) -> u32 {
        if every <= 1 {
            return if every == 0 { u32::MAX } else { 1 };
        }
        let every = every as u64;
        (1 + self.next_random() % (2 * every - 1)).min(u32::MAX as u64) as u32
    }

    /// The gap to the first randomly timed call after the first calls, drawn from the gaps'
    /// equilibrium (forward recurrence) distribution, P(r) ∝ P(gap ≥ r): with it every later call
    /// is timed with probability exactly 1/N from the start, as the unbiased scaling of the rest
    /// assumes (a fresh uniform gap would time the calls right after the first ones less often).
    fn first_gap(&self, every: u64) -> u32 {
        if every == 0 {
            return u32::MAX;
        }
        let m = (2 * every).saturating_sub(1).max(1);
        let weights = m * (m + 1) / 2;
        let u = ((self.next_random() << 31) | self.next_random()) % weights;
        // The s with s(s-1)/2 <= u < s(s+1)/2 has probability ∝ s; the gap is m + 1 - s.
        let s = ((((8 * u + 1) as f64).sqrt() - 1.0) / 2.0).floor() as u64 + 1;
        (m + 1 - s.clamp(1, m)).min(u32::MAX as u64) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// Over many pairs: the first `ALWAYS_TIMED` calls are all timed, as first calls; every later
    /// call is timed with probability 1/N from the very first one on (the scaling of the rest
    /// assumes it), and never as a first call.
    #[test]
    fn first_calls_always_then_one_in_n_from_the_start() {
        const N: u32 = 8;
        const LATER: usize = 40;
        const PAIRS: u64 = 20_000;
        let _rate = super::super::TIMING_TESTS.lock();
        TIMING_EVERY.store(N, Ordering::Relaxed);
        let mut hits = [0u64; ALWAYS_TIMED + LATER];
        for pair in 0..PAIRS {
            let st = ThreadState::default();
            // splitmix64 of the pair number: independent, never-zero seeds.
            let mut z = (pair + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            st.rng.store((z ^ (z >> 31)) | 1, Ordering::Relaxed);
            let s = CallStats::new(0x1000, 1, false);
            for (call, hit) in hits.iter_mut().enumerate() {
                let (timed, first) = st.sample_pair(&s);
                assert_eq!(first, call < ALWAYS_TIMED, "call {call}");
                assert!(timed || call >= ALWAYS_TIMED, "call {call}");
                *hit += timed as u64;
                s.calls.add(1);
            }
        }
        for (call, &hit) in hits.iter().enumerate().skip(ALWAYS_TIMED) {
            let rate = hit as f64 / PAIRS as f64;
            // sd of the rate: sqrt(1/8 * 7/8 / 20000) = 0.0023.
            assert!(
                (rate - 1.0 / N as f64).abs() < 0.01,
                "call {call} timed at rate {rate}"
            );
        }
        // (One test: TIMING_EVERY is global, and tests run in parallel; the others that set it
        // hold TIMING_TESTS too.)
        thinning_keeps_each_call_weighted_one_in_n();
        every_call_timed_and_excluded_pairs_never();
    }

    /// A bracketed builtin's pair that thins its timing out: each call after the first ones,
    /// before and after the switch, is timed with probability 1/(N × weight) — its timed
    /// indicator times its weight averages 1/N at every position, which is what makes the
    /// weighted scaling unbiased — and once thinned, with weight [`THIN_WEIGHT`].
    fn thinning_keeps_each_call_weighted_one_in_n() {
        const N: u32 = 8;
        const CALLS: usize = 12_000;
        const WINDOW: usize = 1_000;
        const PAIRS: u64 = 2_000;
        TIMING_EVERY.store(N, Ordering::Relaxed);
        let mut weighted = [0u64; CALLS / WINDOW];
        let mut thinned_at_end = 0;
        for pair in 0..PAIRS {
            let st = ThreadState::default();
            let mut z = (pair + 7).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            st.rng.store((z ^ (z >> 31)) | 1, Ordering::Relaxed);
            let s = CallStats::new(0x1000, 1, false);
            for call in 0..CALLS {
                let (timed, first, weight) = st.sample_pair_thinning(&s);
                assert_eq!(first, call < ALWAYS_TIMED, "call {call}");
                if first {
                    assert_eq!(weight, 1);
                    s.first.timed.add(1);
                } else if timed {
                    s.sampled.timed.add(u64::from(weight));
                    if call >= ALWAYS_TIMED {
                        weighted[call / WINDOW] += u64::from(weight);
                    }
                }
                s.calls.add(1);
            }
            thinned_at_end += u64::from(s.gap_weight.load(Ordering::Relaxed) == THIN_WEIGHT);
        }
        assert_eq!(
            thinned_at_end, PAIRS,
            "every pair thinned out by {CALLS} calls"
        );
        for (w, &sum) in weighted.iter().enumerate() {
            let calls = if w == 0 {
                WINDOW - ALWAYS_TIMED
            } else {
                WINDOW
            };
            let rate = sum as f64 / (calls as f64 * PAIRS as f64);
            // sd of the rate once thinned: sqrt(64 / 64 / 2e6) / 8 ≈ 0.6 % of 1/8.
            assert!(
                (rate * N as f64 - 1.0).abs() < 0.03,
                "calls {}..{}: weighted rate {rate}",
                w * WINDOW,
                (w + 1) * WINDOW
            );
        }
    }

    /// Which calls record their Python stack: a thread's first call, then one in `STACK_EVERY`
    /// at random (gaps uniform in 1..=2N-1); every call for 1, none for 0. The wrapper asks
    /// `next_samples_soon` ahead of the next call (to note when this one returned), so it must
    /// always agree with the draw that follows (`next_samples_stack`, the full question).
    #[test]
    fn one_call_in_n_records_its_stack_and_the_next_one_is_known_ahead() {
        const N: u32 = 16;
        const CALLS: u32 = 100_000;
        let st = ThreadState::default();
        st.rng.store(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        STACK_EVERY.store(N, Ordering::Relaxed);
        let (mut sampled, mut last) = (0u32, None);
        for call in 0..CALLS {
            let ahead = st.next_samples_stack();
            let now = st.sample(&st.stack_countdown, STACK_EVERY.load(Ordering::Relaxed));
            assert_eq!(ahead, now, "call {call}");
            // What the wrapper's return asks: the same answer with one compare mostly.
            assert_eq!(
                st.next_samples_soon(),
                st.next_samples_stack(),
                "call {call}"
            );
            if now {
                if let Some(prev) = last {
                    assert!((1..2 * N).contains(&(call - prev)), "gap {}", call - prev);
                } else {
                    assert_eq!(call, 0, "a thread's first call records its stack");
                }
                last = Some(call);
                sampled += 1;
            }
        }
        // sd of the count: sqrt(CALLS / N * var(gap) = (31² - 1) / 12) / N ≈ 44 (0.7 %).
        let expected = (CALLS / N) as f64;
        assert!(
            (sampled as f64 - expected).abs() < expected * 0.03,
            "{sampled} stacks in {CALLS} calls"
        );
        for (every, all) in [(1, true), (0, false)] {
            STACK_EVERY.store(every, Ordering::Relaxed);
            for _ in 0..50 {
                assert_eq!(st.next_samples_stack(), all);
                assert_eq!(st.sample(&st.stack_countdown, every), all);
                assert_eq!(st.next_samples_soon(), all);
                // The lean path's one-compare question agrees once `sample` has run.
                assert_eq!(st.skips_stack_next(), !all);
            }
        }
        STACK_EVERY.store(64, Ordering::Relaxed);
    }

    fn every_call_timed_and_excluded_pairs_never() {
        let st = ThreadState::default();
        TIMING_EVERY.store(1, Ordering::Relaxed);
        let s = CallStats::new(0x1000, 1, false);
        for _ in 0..20 {
            assert_eq!(st.sample_pair(&s), (true, false));
            s.calls.add(1);
        }
        let excluded = CallStats::new(0x2000, 1, true);
        for _ in 0..20 {
            assert_eq!(st.sample_pair(&excluded), (false, false));
        }
        TIMING_EVERY.store(8, Ordering::Relaxed);
    }
}
