//! Latency distribution plots, drawn in Rust as small SVGs from each function's HDR histogram.
//!
//! The x axis is logarithmic: boundary latencies span nanoseconds (a trivial call) to milliseconds
//! (a call that blocks), and the shape that matters — one mode or two, a long tail — only shows on
//! a log scale. Bars are the histogram re-binned into equal log-width bins.

use std::fmt::Write;

use ffiprof_analyzer::Report;
use ffiprof_profile::{FunctionRecord, Profile};

use crate::format::{esc, fmt_count, fmt_ns};

const W: f64 = 400.0;
const H: f64 = 120.0;
const LEFT: f64 = 8.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 20.0;
const BINS: usize = 48;

pub(crate) fn section(profile: &Profile, report: &Report, max_plots: usize) -> String {
    let mut out = String::from(
        "<section class=\"card\" id=\"latency\"><h2>Latency distribution (native time per call)</h2>\
         <p class=\"note\">Log-scale time, bars are calls; dashed lines mark p50, p90 and p99. Hover a bar for its range and count.</p>\
         <div class=\"lat-grid\">",
    );
    let shown = report.functions.len().min(max_plots);
    for (i, f) in report.functions.iter().enumerate().take(max_plots) {
        let record = profile
            .functions
            .iter()
            .find(|r| r.library == f.library && r.function == f.function);
        let name = format!(
            "{}!{}",
            f.library.rsplit('/').next().unwrap_or(&f.library),
            f.function
        );
        let _ = write!(
            out,
            "<div class=\"lat\" id=\"lat-{i}\"><h3 class=\"mono\" title=\"{}\">{}</h3>",
            esc(&f.library),
            esc(&name)
        );
        match record {
            Some(r) if !r.native_hist.is_empty() => {
                let s = r.native_hist.summary();
                let _ = write!(
                    out,
                    "<p class=\"note\">{} calls ({} timed) · mean {} · p50 {} · p90 {} · p99 {} · max {}</p>",
                    fmt_count(r.calls),
                    fmt_count(r.timed_calls),
                    fmt_ns(s.mean_ns.round() as u64),
                    fmt_ns(s.p50_ns),
                    fmt_ns(s.p90_ns),
                    fmt_ns(s.p99_ns),
                    fmt_ns(s.max_ns)
                );
                out.push_str(&plot(r));
            }
            _ => out.push_str("<p class=\"note\">No timed calls.</p>"),
        }
        out.push_str("</div>");
    }
    out.push_str("</div>");
    if shown < report.functions.len() {
        let _ = write!(
            out,
            "<p class=\"note\">Plots for the costliest {shown} of {} functions.</p>",
            report.functions.len()
        );
    }
    out.push_str("</section>");
    out
}

/// The histogram of one function as an SVG plot.
pub(crate) fn plot(f: &FunctionRecord) -> String {
    let buckets = f.native_hist.buckets();
    let s = f.native_hist.summary();
    let lo = buckets.first().map(|b| b.0).unwrap_or(1).max(1) as f64;
    let hi = buckets.last().map(|b| b.0).unwrap_or(1).max(1) as f64;
    // Pad the range so a single value is a bar in the middle, not a line at the edge.
    let (xmin, xmax) = ((lo / 1.5).max(0.5).ln(), (hi * 1.5).ln());
    let span = (xmax - xmin).max(1e-9);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x_of = |v: f64| LEFT + (v.max(1e-9).ln() - xmin) / span * pw;
    let mut bins = vec![0u64; BINS];
    for &(v, c) in &buckets {
        let pos = ((v.max(1) as f64).ln() - xmin) / span * BINS as f64;
        bins[(pos.floor().max(0.0) as usize).min(BINS - 1)] += c;
    }
    let peak = bins.iter().copied().max().unwrap_or(0).max(1);
    let total: u64 = bins.iter().sum();
    let mut out = format!(
        "<svg viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"latency histogram\">"
    );
    let bw = pw / BINS as f64;
    for (i, &c) in bins.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let h = (c as f64 / peak as f64 * ph).max(1.0);
        let from = (xmin + span * i as f64 / BINS as f64).exp();
        let to = (xmin + span * (i + 1) as f64 / BINS as f64).exp();
        let _ = write!(
            out,
            "<rect class=\"b\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{} – {}: {} calls ({:.1}%)</title></rect>",
            LEFT + bw * i as f64 + 0.5,
            TOP + ph - h,
            (bw - 1.0).max(0.5),
            h,
            fmt_ns(from as u64),
            fmt_ns(to as u64),
            fmt_count(c),
            c as f64 * 100.0 / total.max(1) as f64
        );
    }
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\"/>",
        TOP + ph,
        W - RIGHT
    );
    // Percentile labels sit above the plot; when two would overlap, the later one drops a row into it.
    let mut last_label_x = f64::NEG_INFINITY;
    let mut row = 0;
    for (label, v, color) in [
        ("p50", s.p50_ns, "#1a7f37"),
        ("p90", s.p90_ns, "#9a6700"),
        ("p99", s.p99_ns, "#cf222e"),
    ] {
        let x = x_of(v as f64);
        let _ = write!(
            out,
            "<line class=\"q\" x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"{color}\"><title>{label} {}</title></line>",
            TOP + ph,
            fmt_ns(v)
        );
        row = if x - last_label_x < 22.0 { row + 1 } else { 0 };
        last_label_x = x;
        let (lx, anchor) = if x > W - RIGHT - 24.0 {
            (x - 2.0, "end")
        } else {
            (x + 2.0, "start")
        };
        let _ = write!(
            out,
            "<text x=\"{lx:.1}\" y=\"{:.1}\" fill=\"{color}\" text-anchor=\"{anchor}\">{label}</text>",
            TOP - 3.0 + 11.0 * row as f64
        );
    }
    for t in ticks(lo / 1.5, hi * 1.5) {
        let x = x_of(t);
        if !(LEFT - 0.5..=W - RIGHT + 0.5).contains(&x) {
            continue;
        }
        let _ = write!(
            out,
            "<line class=\"axis\" x1=\"{x:.1}\" y1=\"{0:.1}\" x2=\"{x:.1}\" y2=\"{1:.1}\"/><text x=\"{x:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{3}</text>",
            TOP + ph,
            TOP + ph + 3.0,
            H - 6.0,
            fmt_ns(t as u64)
        );
    }
    out.push_str("</svg>");
    out
}

/// Tick values: powers of ten, with 2× and 5× steps when the range is under two decades.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let first = lo.max(1.0).log10().floor() as i32;
    let last = hi.max(1.0).log10().ceil() as i32;
    let fine = last - first <= 2;
    for e in first..=last {
        let base = 10f64.powi(e);
        for m in if fine {
            &[1.0, 2.0, 5.0][..]
        } else {
            &[1.0][..]
        } {
            let v = base * m;
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_cover_the_range() {
        assert_eq!(ticks(20.0, 3000.0), vec![100.0, 1000.0]);
        assert_eq!(ticks(30.0, 90.0), vec![50.0]);
        assert_eq!(ticks(15.0, 120.0), vec![20.0, 50.0, 100.0]);
    }

    #[test]
    fn plot_has_a_bar_per_populated_bin_and_percentile_markers() {
        let mut f = FunctionRecord::new("/lib/libm.so.6", "cos");
        f.native_hist.record_n(40, 90);
        f.native_hist.record_n(4000, 10);
        let svg = plot(&f);
        assert_eq!(svg.matches("<rect class=\"b\"").count(), 2, "{svg}");
        assert!(svg.contains(">p50<") && svg.contains(">p99<"));
        assert!(svg.contains("90 calls (90.0%)"), "{svg}");
    }
}
