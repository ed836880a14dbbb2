//! The split of a foreign call's time into the five parts ffiprof tells apart — the one definition
//! of those parts that the agent's counters, the profile, merging, the analyzer and the renderers
//! all share.
//!
//! In a profile the parts are nanoseconds (`Split<u64>`, the default); the agent keeps them as
//! clock ticks in per-thread counters (`Split<Counter>`) and the snapshot works in `f64` while it
//! scales sampled times. In JSON a split is not an object of its own: its record flattens it
//! (`#[serde(flatten)]`), so the keys stay `native_ns`, `marshal_in_ns`, `marshal_out_ns`,
//! `gil_wait_ns`, `construction_ns`, in that order, where the record puts them.
//!
//! ```
//! use ffiprof_profile::{Part, Split};
//! let a = Split { native: 80, marshal_in: 400, ..Split::default() };
//! let b = Split { native: 20, gil_wait: 5, ..Split::default() };
//! assert_eq!((a + b).total(), 505);
//! assert_eq!(a.scale(2.5).marshal_in, 1000);
//! assert_eq!(*a.get(Part::MarshalIn), 400);
//! ```

use std::iter::Sum;
use std::ops::{Add, AddAssign};

use serde::{Deserialize, Serialize};

/// One part of a call's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    Native,
    MarshalIn,
    MarshalOut,
    GilWait,
    Construction,
}

impl Part {
    /// Every part, in the order of [`Split`]'s fields and of the profile's JSON keys.
    pub const ALL: [Part; 5] = [
        Part::Native,
        Part::MarshalIn,
        Part::MarshalOut,
        Part::GilWait,
        Part::Construction,
    ];

    /// The part's name: its JSON key without `_ns` (`native`, `marshal_in`, `marshal_out`,
    /// `gil_wait`, `construction`).
    pub fn name(self) -> &'static str {
        match self {
            Part::Native => "native",
            Part::MarshalIn => "marshal_in",
            Part::MarshalOut => "marshal_out",
            Part::GilWait => "gil_wait",
            Part::Construction => "construction",
        }
    }
}

/// A call's time (or a sum over calls) split into its five parts.
///
/// Reading: a record written before a part existed lacks its key, which reads as 0; only
/// `native_ns` was in every profile ever written, and a record without it is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de> + Default"))]
pub struct Split<T = u64> {
    /// In the C function itself (libffi's own call included).
    #[serde(rename = "native_ns")]
    pub native: T,
    /// Converting the Python arguments to C, from the Python-level call to the C call.
    #[serde(rename = "marshal_in_ns", default)]
    pub marshal_in: T,
    /// Converting the C result back, from the C call's return (or the GIL's) to the Python one.
    #[serde(rename = "marshal_out_ns", default)]
    pub marshal_out: T,
    /// Waiting to get the GIL back after the C call released it.
    #[serde(rename = "gil_wait_ns", default)]
    pub gil_wait: T,
    /// Building the ctypes objects passed fresh to the call (and releasing them), before it.
    #[serde(rename = "construction_ns", default)]
    pub construction: T,
}

impl<T> Split<T> {
    /// A split whose every part is `f(part)`.
    pub fn from_fn(mut f: impl FnMut(Part) -> T) -> Self {
        Split {
            native: f(Part::Native),
            marshal_in: f(Part::MarshalIn),
            marshal_out: f(Part::MarshalOut),
            gil_wait: f(Part::GilWait),
            construction: f(Part::Construction),
        }
    }

    pub fn get(&self, part: Part) -> &T {
        match part {
            Part::Native => &self.native,
            Part::MarshalIn => &self.marshal_in,
            Part::MarshalOut => &self.marshal_out,
            Part::GilWait => &self.gil_wait,
            Part::Construction => &self.construction,
        }
    }

    pub fn get_mut(&mut self, part: Part) -> &mut T {
        match part {
            Part::Native => &mut self.native,
            Part::MarshalIn => &mut self.marshal_in,
            Part::MarshalOut => &mut self.marshal_out,
            Part::GilWait => &mut self.gil_wait,
            Part::Construction => &mut self.construction,
        }
    }

    /// Every part with its value, in [`Part::ALL`]'s order.
    pub fn iter(&self) -> impl Iterator<Item = (Part, &T)> {
        Part::ALL.into_iter().map(move |p| (p, self.get(p)))
    }

    /// `f` applied to every part.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Split<U> {
        Split::from_fn(|p| f(self.get(p)))
    }
}

impl Split<u64> {
    /// All five parts: the call's whole time at the boundary.
    pub fn total(&self) -> u64 {
        self.native + self.marshal_in + self.marshal_out + self.gil_wait + self.construction
    }

    /// Marshal-in + marshal-out + GIL wait: what crossing the boundary costs a call apart from
    /// the C code and from building its arguments.
    pub fn overhead(&self) -> u64 {
        self.marshal_in + self.marshal_out + self.gil_wait
    }

    /// Every part times `factor`, rounded: the times of sampled calls extrapolated to the calls
    /// they stand for.
    pub fn scale(&self, factor: f64) -> Split<u64> {
        self.map(|&v| v as f64).scale(factor).round()
    }

    /// Part by part `self - other`, never below zero.
    pub fn saturating_sub(&self, other: &Split<u64>) -> Split<u64> {
        Split::from_fn(|p| self.get(p).saturating_sub(*other.get(p)))
    }

    pub fn is_zero(&self) -> bool {
        *self == Split::default()
    }
}

impl Split<f64> {
    /// Every part times `factor`.
    pub fn scale(&self, factor: f64) -> Split<f64> {
        self.map(|&v| v * factor)
    }

    /// Every part rounded to the nearest whole number (negative and NaN parts to 0).
    pub fn round(&self) -> Split<u64> {
        self.map(|&v| v.round() as u64)
    }
}

impl<T: AddAssign + Copy> AddAssign for Split<T> {
    fn add_assign(&mut self, other: Self) {
        for p in Part::ALL {
            *self.get_mut(p) += *other.get(p);
        }
    }
}

impl<T: AddAssign + Copy> AddAssign<&Split<T>> for Split<T> {
    fn add_assign(&mut self, other: &Self) {
        *self += *other;
    }
}

impl<T: AddAssign + Copy> Add for Split<T> {
    type Output = Self;
    fn add(mut self, other: Self) -> Self {
        self += other;
        self
    }
}

impl<T: AddAssign + Copy + Default> Sum for Split<T> {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Split::default(), Add::add)
    }
}

impl<'a, T: AddAssign + Copy + Default + 'a> Sum<&'a Split<T>> for Split<T> {
    fn sum<I: Iterator<Item = &'a Self>>(iter: I) -> Self {
        iter.copied().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split() -> Split {
        Split {
            native: 1,
            marshal_in: 20,
            marshal_out: 300,
            gil_wait: 4_000,
            construction: 50_000,
        }
    }

    #[test]
    fn total_and_overhead() {
        assert_eq!(split().total(), 54_321);
        assert_eq!(split().overhead(), 4_320);
        assert_eq!(Split::<u64>::default().total(), 0);
    }

    #[test]
    fn add_sum_and_subtract_part_by_part() {
        let mut a = split();
        a += split();
        assert_eq!(a, split().scale(2.0));
        assert_eq!(a + split(), split().scale(3.0));
        assert_eq!([split(), split()].iter().sum::<Split>(), a);
        assert_eq!(a.saturating_sub(&split()), split());
        let less = split().saturating_sub(&a);
        assert!(less.is_zero(), "{less:?}");
    }

    #[test]
    fn scale_rounds_each_part() {
        let s = Split {
            native: 3,
            marshal_in: 5,
            marshal_out: 1,
            gil_wait: 0,
            construction: 1_000_000_007,
        };
        assert_eq!(
            s.scale(0.5),
            Split {
                native: 2,
                marshal_in: 3,
                marshal_out: 1,
                gil_wait: 0,
                construction: 500_000_004,
            }
        );
        assert_eq!(s.scale(8.0).native, 24);
        assert_eq!(s.scale(0.0), Split::default());
        let f = Split::from_fn(|p| p as u8 as f64 - 0.4);
        assert_eq!(
            f.round(),
            Split::from_fn(|p| p as u64),
            "negative parts round to 0"
        );
    }

    #[test]
    fn parts_by_name_in_order() {
        let names: Vec<&str> = split().iter().map(|(p, _)| p.name()).collect();
        assert_eq!(
            names,
            [
                "native",
                "marshal_in",
                "marshal_out",
                "gil_wait",
                "construction"
            ]
        );
        let values: Vec<u64> = split().iter().map(|(_, &v)| v).collect();
        assert_eq!(values, [1, 20, 300, 4_000, 50_000]);
        let mut s = split();
        *s.get_mut(Part::GilWait) = 7;
        assert_eq!(s.gil_wait, 7);
        assert_eq!(s.map(|v| v * 2).native, 2);
    }

    /// A record that flattens a split, as the profile's records do.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Record {
        calls: u64,
        #[serde(flatten)]
        time: Split,
        bytes: u64,
    }

    #[test]
    fn flattened_keys_keep_their_names_and_place() {
        let r = Record {
            calls: 2,
            time: split(),
            bytes: 9,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"calls":2,"native_ns":1,"marshal_in_ns":20,"marshal_out_ns":300,"gil_wait_ns":4000,"construction_ns":50000,"bytes":9}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
    }

    #[test]
    fn missing_parts_read_as_zero_but_native_is_required() {
        let old: Record = serde_json::from_str(r#"{"calls":1,"native_ns":5,"bytes":0}"#).unwrap();
        assert_eq!(
            old.time,
            Split {
                native: 5,
                ..Split::default()
            }
        );
        let e = serde_json::from_str::<Record>(r#"{"calls":1,"bytes":0}"#).unwrap_err();
        assert!(e.to_string().contains("native_ns"), "{e}");
    }
}
