//! Latency distributions in the profile: an HDR histogram stored in its own compact V2+deflate
//! encoding (base64 in JSON), so readers get exact percentiles without the profile growing with the
//! number of calls.

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{
    Deserialize, Deserializer as SerdeDeserializer, Serialize, Serializer as SerdeSerializer,
};
use thiserror::Error;

/// Highest value tracked: one hour in nanoseconds; larger values are clamped.
const MAX_TRACKABLE_NS: u64 = 3_600_000_000_000;
/// Two significant digits: buckets under 1 % wide, which the ±3 % accuracy target needs.
const SIGFIG: u8 = 2;

#[derive(Debug, Error)]
pub enum HistogramError {
    #[error("histogram is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("histogram encoding is corrupt: {0:?}")]
    Decode(hdrhistogram::serialization::DeserializeError),
}

/// A latency histogram in nanoseconds.
#[derive(Clone)]
pub struct Histogram(hdrhistogram::Histogram<u64>);

/// The percentiles every report shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    pub mean_ns: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Self(
            hdrhistogram::Histogram::new_with_bounds(1, MAX_TRACKABLE_NS, SIGFIG)
                .expect("static histogram bounds are valid"),
        )
    }

    /// Records `count` values of `ns` (clamped to the trackable range).
    pub fn record_n(&mut self, ns: u64, count: u64) {
        if count == 0 {
            return;
        }
        let _ = self.0.record_n(ns.clamp(1, MAX_TRACKABLE_NS), count);
    }

    pub fn record(&mut self, ns: u64) {
        self.record_n(ns, 1);
    }

    pub fn add(&mut self, other: &Histogram) {
        let _ = self.0.add(&other.0);
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Value at quantile `q` in 0..=1, or 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            // The middle of the bucket: its upper edge would bias every percentile up by as much
            // as the bucket is wide (~1 %).
            self.0.median_equivalent(self.0.value_at_quantile(q))
        }
    }

    pub fn summary(&self) -> LatencySummary {
        if self.0.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.0.len(),
            min_ns: self.0.min(),
            p50_ns: self.quantile(0.50),
            p90_ns: self.quantile(0.90),
            p99_ns: self.quantile(0.99),
            max_ns: self.0.highest_equivalent(self.0.max()),
            mean_ns: self.0.mean(),
        }
    }

    /// (bucket upper bound in ns, count) for every non-empty bucket, in increasing order, for plots.
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_since_last_iteration()))
            .collect()
    }

    /// The underlying HDR histogram, for callers that need more than the summary.
    pub fn inner(&self) -> &hdrhistogram::Histogram<u64> {
        &self.0
    }

    pub fn encode(&self) -> String {
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&self.0, &mut bytes)
            .expect("serializing into memory cannot fail");
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    pub fn decode(text: &str) -> Result<Self, HistogramError> {
        if text.is_empty() {
            return Ok(Self::new());
        }
        let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
        let h: hdrhistogram::Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(HistogramError::Decode)?;
        let mut out = Self::new();
        let _ = out.0.add(&h);
        Ok(out)
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram({:?})", self.summary())
    }
}

impl PartialEq for Histogram {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Serialize for Histogram {
    fn serialize<S: SerdeSerializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Histogram {
    fn deserialize<D: SerdeDeserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Histogram::decode(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_percentiles() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 100);
        }
        let back = Histogram::decode(&h.encode()).unwrap();
        assert_eq!(back.len(), 1000);
        let s = back.summary();
        assert!(
            (s.p50_ns as f64 - 50_000.0).abs() / 50_000.0 < 0.01,
            "{s:?}"
        );
        assert!(
            (s.p99_ns as f64 - 99_000.0).abs() / 99_000.0 < 0.01,
            "{s:?}"
        );
    }

    #[test]
    fn empty_histogram_summarizes_to_zero() {
        assert_eq!(Histogram::new().summary(), LatencySummary::default());
        assert!(Histogram::decode("").unwrap().is_empty());
    }

    #[test]
    fn corrupt_encoding_is_an_error() {
        assert!(Histogram::decode("!!!").is_err());
        assert!(Histogram::decode("aGVsbG8=").is_err());
    }
}
