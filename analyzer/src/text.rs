//! The terminal summary: a table a person can read at a glance.

use std::fmt::Write;

use crate::advice::{Estimate, Method, Recommendation};
use crate::summary::Report;

/// Nanoseconds as a short human duration: `850ns`, `12.3µs`, `4.56ms`, `1.23s`.
pub fn fmt_ns(ns: u64) -> String {
    let n = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", n / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", n / 1e6)
    } else {
        format!("{:.2}s", n / 1e9)
    }
}

/// Bytes with a binary unit: `512B`, `4.0KiB`, `1.5MiB`.
pub fn fmt_bytes(b: u64) -> String {
    let n = b as f64;
    if b < 1024 {
        format!("{b}B")
    } else if b < 1024 * 1024 {
        format!("{:.1}KiB", n / 1024.0)
    } else if b < 1024 * 1024 * 1024 {
        format!("{:.1}MiB", n / (1024.0 * 1024.0))
    } else {
        format!("{:.2}GiB", n / (1024.0 * 1024.0 * 1024.0))
    }
}

/// Renders the report as the terminal summary.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let m = &report.meta;
    let cmd = m.command.join(" ");
    let _ = writeln!(
        out,
        "ffiprof: pid {} `{}` — {} boundary calls in {} ({}{})",
        m.pid,
        cmd,
        m.total_calls,
        fmt_ns(m.duration_ns),
        m.python
            .as_deref()
            .map(|p| format!("Python {}", p.split_whitespace().next().unwrap_or(p)))
            .unwrap_or_else(|| "not Python".into()),
        if m.complete {
            ""
        } else {
            ", snapshot: the process had not finished"
        },
    );
    if m.timing_sample_every > 1 {
        // A bracketed builtin's pair thins its timing out once 1024 of its calls were timed
        // (the agent's `sampling::sample_pair_thinning`): said, so that "1 call in N" stays true.
        let builtins = report
            .functions
            .iter()
            .any(|f| matches!(f.binding.as_str(), "extension" | "cffi-api"));
        let _ = writeln!(
            out,
            "  times measured on each site's first 8 calls, then on 1 call in {}{} and scaled; counts and bytes are exact",
            m.timing_sample_every,
            if builtins {
                " (a builtin's, more rarely once 1024 of its calls were timed: see timed_calls in the JSON)"
            } else {
                ""
            }
        );
    }
    if m.dropped_calls > 0 {
        let _ = writeln!(
            out,
            "  warning: {} calls could not be recorded (recorder tables full)",
            m.dropped_calls
        );
    }
    for h in &m.hooks_skipped {
        let _ = writeln!(out, "  hook skipped: {h}");
    }
    if report.functions.is_empty() {
        let _ = writeln!(
            out,
            "\nNo calls into native libraries through libffi were recorded."
        );
        out.push_str(&render_ctypes_internal(&report.ctypes_internal));
        return out;
    }
    let has_split = report.functions.iter().any(|f| f.python_calls > 0);
    // Columns only profiles with builtin brackets (`--lib` and extension modules) or a
    // binding recorded have: older profiles render as before.
    let has_binding = report.functions.iter().any(|f| !f.binding.is_empty());
    let has_unsplit = report.functions.iter().any(|f| f.unsplit_ns > 0);
    if has_unsplit {
        let _ = writeln!(
            out,
            "  whole call: calls of a builtin that made no call into a --lib target (or whose \
             module is the target): no separate native entry, so the whole call, not split"
        );
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["function", "library"];
    if has_binding {
        header.push("binding");
    }
    header.extend([
        "calls",
        "arg bytes",
        "buf bytes",
        "native",
        "p50",
        "p99",
        "max",
    ]);
    if has_split {
        header.extend(["marshal-in", "marshal-out", "gil wait", "construct"]);
    }
    if has_unsplit {
        header.push("whole call");
    }
    for f in &report.functions {
        let lib = f
            .library
            .rsplit('/')
            .next()
            .unwrap_or(&f.library)
            .to_string();
        let mut row = vec![f.function.clone(), lib];
        if has_binding {
            row.push(binding_label(f));
        }
        row.extend([
            f.calls.to_string(),
            fmt_bytes(f.arg_bytes),
            fmt_bytes(f.buffer_bytes),
            fmt_ns(f.native_ns),
            fmt_ns(f.native_p50_ns),
            fmt_ns(f.native_p99_ns),
            fmt_ns(f.native_max_ns),
        ]);
        if has_split {
            row.extend([
                fmt_ns(f.marshal_in_ns),
                fmt_ns(f.marshal_out_ns),
                fmt_ns(f.gil_wait_ns),
                fmt_ns(f.construction_ns),
            ]);
        }
        if has_unsplit {
            row.push(fmt_ns(f.unsplit_ns));
        }
        rows.push(row);
    }
    out.push('\n');
    out.push_str(&table(&header, &rows));

    let mut sites: Vec<(String, &crate::summary::SiteSummary)> = report
        .functions
        .iter()
        .flat_map(|f| f.sites.iter().map(move |s| (f.function.clone(), s)))
        .collect();
    if !sites.is_empty() {
        sites.sort_by(|a, b| {
            (b.1.time.total() + b.1.unsplit_ns)
                .cmp(&(a.1.time.total() + a.1.unsplit_ns))
                .then(b.1.calls.cmp(&a.1.calls))
        });
        let rows: Vec<Vec<String>> = sites
            .iter()
            .take(10)
            .map(|(func, s)| {
                let mut row = vec![
                    format!("{}:{}", s.file, s.line),
                    s.function.clone(),
                    func.clone(),
                    s.calls.to_string(),
                    fmt_ns(s.time.native),
                    fmt_ns(s.time.marshal_in),
                    fmt_ns(s.time.marshal_out),
                    fmt_ns(s.time.gil_wait),
                    fmt_ns(s.time.construction),
                ];
                if has_unsplit {
                    row.push(fmt_ns(s.unsplit_ns));
                }
                row
            })
            .collect();
        out.push_str("\nTop call sites\n");
        let mut header = vec![
            "site",
            "in",
            "calls",
            "count",
            "native",
            "marshal-in",
            "marshal-out",
            "gil wait",
            "construct",
        ];
        if has_unsplit {
            header.push("whole call");
        }
        out.push_str(&table(&header, &rows));
    }
    out.push_str(&render_ctypes_internal(&report.ctypes_internal));
    out.push_str(&render_recommendations(
        &report.recommendations,
        report.meta.threads,
    ));
    out
}

/// The binding column: `extension (pybind11)`, `cffi-api`, `ctypes`, ... (`-` when unknown).
fn binding_label(f: &crate::summary::FunctionSummary) -> String {
    match (f.binding.as_str(), f.binding_detail.as_str()) {
        ("", _) => "-".into(),
        (b, "") => b.into(),
        (b, d) => format!("{b} ({d})"),
    }
}

/// ctypes' own foreign calls (`ctypes.cast`, ...): what they cost, at which of the user's lines.
fn render_ctypes_internal(internal: &[crate::summary::FunctionSummary]) -> String {
    let mut out = String::new();
    if internal.is_empty() {
        return out;
    }
    let rows: Vec<Vec<String>> = internal
        .iter()
        .map(|f| {
            let mut sites: Vec<String> = f
                .sites
                .iter()
                .take(3)
                .map(|s| format!("{}:{} ({})", s.file, s.line, s.calls))
                .collect();
            if f.sites.len() > 3 {
                sites.push(format!("+{} more", f.sites.len() - 3));
            }
            vec![
                f.function.clone(),
                f.calls.to_string(),
                fmt_ns(f.total_ns),
                sites.join(", "),
            ]
        })
        .collect();
    out.push_str(
        "\nctypes' own calls (ctypes.cast, string_at, wstring_at call into ctypes itself: \
         its cost at these lines, not a library function)\n",
    );
    out.push_str(&table(&["ctypes", "calls", "total", "sites"], &rows));
    out
}

/// Width the recommendation text is wrapped to.
const WRAP: usize = 100;

/// The recommendations section: each piece of advice, its saving, its reasoning and an example.
/// `threads` is the profile's: with several, percentages are of their time summed.
pub fn render_recommendations(recs: &[Recommendation], threads: u32) -> String {
    let mut out = String::new();
    if recs.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\nRecommendations (best first; each saving is alone — they overlap and do not add up)"
    );
    let of = if threads > 1 {
        format!("of the {threads} threads' time")
    } else {
        "of the run".to_string()
    };
    for (i, r) in recs.iter().enumerate() {
        let place = r
            .site
            .as_ref()
            .map(|s| format!(" at {}:{}", s.file, s.line))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:>2}. {} · {} ({}){place}",
            i + 1,
            r.kind.name(),
            r.function,
            r.library_name()
        );
        let worth = if r.estimated_savings_ns > 0 {
            let upper = r
                .saving_upper_bound_ns()
                .map(|u| format!(", up to ~{}", fmt_ns(u)))
                .unwrap_or_default();
            format!(
                "saves ~{} ({:.1}% {of}){upper} · {}",
                fmt_ns(r.estimated_savings_ns),
                r.savings_percent,
                estimate_text(&r.estimate),
            )
        } else if r.estimate.method == Method::Measured && r.estimate.per_call_ns < 0.0 {
            format!(
                "correctness: no time claimed; the change costs {}",
                estimate_text(&r.estimate)
            )
        } else {
            "correctness: no time claimed".to_string()
        };
        let _ = writeln!(out, "    {worth} · confidence {}", r.confidence.name());
        for line in wrap(&r.suggestion, WRAP - 4) {
            let _ = writeln!(out, "    {line}");
        }
        if let Some(example) = r.example() {
            for line in example.lines() {
                let _ = writeln!(out, "        {line}");
            }
        }
    }
    out
}

/// `measured ~540ns ± 30ns a call` or `modeled ~300ns a call`: how the estimate was made.
fn estimate_text(e: &Estimate) -> String {
    let per_call = fmt_ns(e.per_call_ns.abs().round() as u64);
    match (e.method, e.spread_ns) {
        (Method::Measured, Some(s)) => {
            format!("measured ~{per_call} ± {} a call", fmt_ns(s.round() as u64))
        }
        (m, _) => format!("{} ~{per_call} a call", m.name()),
    }
}

/// Greedy word wrap.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// A plain left/right aligned table: text columns left, numbers right.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..cols)
        .map(|i| {
            !rows.is_empty()
                && rows.iter().all(|r| {
                    // A quantity starts with a digit; an unnamed function's `0x…` offset does
                    // too, but it is a name and reads left-aligned.
                    r.get(i)
                        .map(|c| {
                            c.starts_with(|ch: char| ch.is_ascii_digit()) && !c.starts_with("0x")
                        })
                        .unwrap_or(true)
                })
        })
        .collect();
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i].saturating_sub(c.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            if numeric[i] {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    line(
        width
            .iter()
            .map(|w| "─".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(|s| s.as_str())
            .collect(),
        &mut out,
    );
    for r in rows {
        line(r.iter().map(|s| s.as_str()).collect(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_units() {
        assert_eq!(fmt_ns(850), "850ns");
        assert_eq!(fmt_ns(12_340), "12.3µs");
        assert_eq!(fmt_ns(4_560_000), "4.56ms");
        assert_eq!(fmt_bytes(512), "512B");
        assert_eq!(fmt_bytes(4096), "4.0KiB");
    }

    #[test]
    fn lists_ctypes_own_calls_apart_from_functions() {
        let mut p = ffiprof_profile::Profile::new();
        let mut f = ffiprof_profile::FunctionRecord::new("/l/libfx.so", "fx_scale");
        f.calls = 10;
        p.functions.push(f);
        let mut cast = ffiprof_profile::FunctionRecord::new("/p/_ctypes.cpython-311.so", "cast");
        cast.calls = 300;
        cast.time.native = 30_000;
        cast.sites.push(ffiprof_profile::SiteRecord {
            file: "app.py".into(),
            line: 7,
            calls: 300,
            ..Default::default()
        });
        p.ctypes_internal.push(cast);
        let report = crate::summarize(&p, &crate::SummaryOptions::default());
        assert_eq!(report.functions.len(), 1);
        assert_eq!(report.ctypes_internal[0].total_ns, 30_000);
        let text = render(&report);
        assert!(text.contains("ctypes' own calls"), "{text}");
        assert!(text.contains("app.py:7 (300)"), "{text}");
    }

    #[test]
    fn shows_the_binding_and_a_builtins_whole_call_time_as_such() {
        let mut p = ffiprof_profile::Profile::new();
        let mut ext = ffiprof_profile::FunctionRecord::new("/m/fxpb.so", "fxpb.sum_list");
        ext.calls = 100;
        ext.python_calls = 100;
        ext.binding = "extension".into();
        ext.binding_detail = "pybind11".into();
        ext.unsplit_ns = 7_000_000;
        p.functions.push(ext);
        let mut c = ffiprof_profile::FunctionRecord::new("/l/libfx.so", "fx_scale");
        c.calls = 10;
        c.python_calls = 10;
        c.binding = "ctypes".into();
        c.time.native = 1_000;
        p.functions.push(c);
        let text = render(&crate::summary::summarize(&p, &Default::default()));
        assert!(text.contains("whole call: calls of a builtin"), "{text}");
        let row = text
            .lines()
            .find(|l| l.starts_with("fxpb.sum_list"))
            .unwrap();
        assert!(row.contains("extension (pybind11)"), "{row}");
        assert!(row.ends_with("7.00ms"), "the whole call, last: {row}");
        let row = text.lines().find(|l| l.starts_with("fx_scale")).unwrap();
        assert!(row.contains(" ctypes "), "{row}");
        // Ranked by all its time, the unsplit whole calls included.
        let first = text.lines().position(|l| l.starts_with("fxpb.sum_list"));
        let second = text.lines().position(|l| l.starts_with("fx_scale"));
        assert!(first < second, "{text}");
    }

    #[test]
    fn wraps_words() {
        assert_eq!(wrap("aa bb cc dd", 5), ["aa bb", "cc dd"]);
        assert_eq!(wrap("", 5), Vec::<String>::new());
    }

    #[test]
    fn renders_recommendations_with_examples() {
        let mut p = ffiprof_profile::Profile::new();
        let mut f = ffiprof_profile::FunctionRecord::new("/l/libfx.so", "fx_scale");
        f.calls = 200_000;
        f.python_calls = 200_000;
        f.timed_calls = 200_000;
        f.time.marshal_in = 200 * 200_000;
        f.time.marshal_out = 100 * 200_000;
        f.time.native = 30 * 200_000;
        f.native_hist.record_n(30, 200_000);
        p.functions.push(f);
        p.meta.duration_ns = 100_000_000;
        let text = render(&crate::summarize(&p, &crate::SummaryOptions::default()));
        assert!(text.contains("Recommendations"), "{text}");
        assert!(text.contains(" 1. batch · fx_scale (libfx.so)"), "{text}");
        assert!(
            text.contains(
                "saves ~60.00ms (60.0% of the run) · modeled ~300ns a call · confidence medium"
            ),
            "{text}"
        );
        assert!(text.contains("void fx_scale_many("), "{text}");
    }

    #[test]
    fn a_measured_cost_is_shown_with_its_sign_and_threads_are_named() {
        let mut p = ffiprof_profile::Profile::new();
        let mut f = ffiprof_profile::FunctionRecord::new("/l/libfx.so", "fx_mul");
        f.calls = 1_000;
        p.functions.push(f);
        p.meta.duration_ns = 100_000_000;
        p.meta.threads = 4;
        let mut report = crate::summarize(&p, &crate::SummaryOptions::default());
        let rec = |kind, saving: u64, estimate| crate::Recommendation {
            kind,
            function: "fx_mul".into(),
            library: "/l/libfx.so".into(),
            site: None,
            estimated_savings_ns: saving,
            savings_percent: crate::cost_model::percent_of(saving, 400_000_000),
            confidence: crate::Confidence::Low,
            estimate,
            evidence: serde_json::Map::new(),
            suggestion: "Declare argtypes.".into(),
        };
        report.recommendations = vec![
            rec(
                crate::AdviceKind::Batch,
                40_000_000,
                crate::Estimate::measured(400.0, 12.0),
            ),
            rec(
                crate::AdviceKind::DeclareArgtypes,
                0,
                crate::Estimate::measured(-103.4, 6.0),
            ),
        ];
        let text = render(&report);
        assert!(
            text.contains(
                "saves ~40.00ms (10.0% of the 4 threads' time) · measured ~400ns ± 12ns a call · confidence low"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "correctness: no time claimed; the change costs measured ~103ns ± 6ns a call · confidence low"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_lower_bound_estimate_shows_its_upper_bound() {
        let mut p = ffiprof_profile::Profile::new();
        let mut f = ffiprof_profile::FunctionRecord::new("/l/libfx.so", "fx_fill");
        f.calls = 50_000;
        f.time.native = 228 * 50_000;
        p.functions.push(f);
        p.meta.duration_ns = 100_000_000;
        let mut report = crate::summarize(&p, &crate::SummaryOptions::default());
        let mut rec = crate::Recommendation {
            kind: crate::AdviceKind::ReuseBuffer,
            function: "fx_fill".into(),
            library: "/l/libfx.so".into(),
            site: Some(crate::SiteRef {
                file: "app.py".into(),
                line: 12,
            }),
            estimated_savings_ns: 9_690_000,
            savings_percent: 9.7,
            confidence: crate::Confidence::High,
            estimate: crate::Estimate::modeled(193.8),
            evidence: serde_json::Map::new(),
            suggestion: "Build it once.".into(),
        };
        rec.evidence
            .insert("saving_upper_bound_ns".into(), 41_830_000u64.into());
        report.recommendations = vec![rec.clone()];
        let text = render(&report);
        assert!(
            text.contains(
                "saves ~9.69ms (9.7% of the run), up to ~41.83ms · modeled ~194ns a call · confidence high"
            ),
            "{text}"
        );
        // A bound at or under the estimate says nothing more.
        rec.evidence
            .insert("saving_upper_bound_ns".into(), 9_000_000u64.into());
        report.recommendations = vec![rec];
        let text = render(&report);
        assert!(
            text.contains(
                "saves ~9.69ms (9.7% of the run) · modeled ~194ns a call · confidence high"
            ),
            "{text}"
        );
    }
}
