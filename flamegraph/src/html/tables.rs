//! The per-function and per-call-site tables. Every sortable cell carries its raw value in `data-v`,
//! so sorting is by number while the text stays human (`12.3µs`, `4.0KiB`).

use std::fmt::Write;

use ffiprof_analyzer::{Report, SiteSummary};
use ffiprof_profile::Split;

use super::recommendations::Rec;
use crate::format::{esc, fmt_bytes, fmt_count, fmt_ns};
use crate::stacks::DRAWN_PARTS;

/// A stacked bar of the split (the parts in drawing order, each its label as CSS class suffix),
/// scaled to `max` so rows compare at a glance.
fn bar(split: &Split, max: u64) -> String {
    let total = split.total();
    let mut title = String::new();
    for (part, label) in DRAWN_PARTS {
        let v = *split.get(part);
        if v > 0 {
            let pct = v as f64 * 100.0 / total.max(1) as f64;
            let _ = writeln!(title, "{label} {} ({pct:.0}%)", fmt_ns(v));
        }
    }
    let mut out = format!("<div class=\"bar\" title=\"{}\">", esc(title.trim_end()));
    for (part, label) in DRAWN_PARTS {
        let v = *split.get(part);
        if v > 0 && max > 0 {
            let w = v as f64 * 100.0 / max as f64;
            let _ = write!(
                out,
                "<span class=\"p-{label}\" style=\"width:{w:.2}%\"></span>"
            );
        }
    }
    out.push_str("</div>");
    out
}

/// The boundary-time cell: the stacked bar and the total beside it, sorted by the total.
fn bar_cell(split: &Split, max: u64) -> String {
    let total = split.total();
    format!(
        "<td class=\"num\" data-v=\"{total}\"><div class=\"barcell\">{}<span>{}</span></div></td>",
        bar(split, max),
        fmt_ns(total)
    )
}

fn num_ns(v: u64) -> String {
    format!("<td class=\"num\" data-v=\"{v}\">{}</td>", fmt_ns(v))
}

fn num_bytes(v: u64) -> String {
    format!("<td class=\"num\" data-v=\"{v}\">{}</td>", fmt_bytes(v))
}

fn num_count(v: u64) -> String {
    format!("<td class=\"num\" data-v=\"{v}\">{}</td>", fmt_count(v))
}

fn header(cols: &[(&str, bool)]) -> String {
    let mut out = String::from("<thead><tr>");
    for (name, numeric) in cols {
        if *numeric {
            let _ = write!(
                out,
                "<th class=\"num\" data-type=\"num\">{}</th>",
                esc(name)
            );
        } else {
            let _ = write!(out, "<th data-type=\"text\">{}</th>", esc(name));
        }
    }
    out.push_str("</tr></thead>");
    out
}

fn library_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Row anchor of the report's `i`-th function.
pub(crate) fn function_anchor(i: usize) -> String {
    format!("fn-{i}")
}

pub(crate) fn functions_section(report: &Report) -> String {
    let mut out = String::from(
        "<section class=\"card\" id=\"functions\"><h2>Functions</h2>\
         <p class=\"note\">Click a column to sort. Percentiles are of native time per call, from the HDR histograms.</p>",
    );
    out.push_str(&super::legend(crate::Weight::Time));
    // Columns only profiles with a binding recorded, or builtin brackets, have (older profiles
    // render as before).
    let has_binding = report.functions.iter().any(|f| !f.binding.is_empty());
    let has_unsplit = report.functions.iter().any(|f| f.unsplit_ns > 0);
    if has_unsplit {
        out.push_str(
            "<p class=\"note\">Whole call: a builtin of an extension module with no separate native \
             entry seen inside; its time is the whole call, not split into the parts.</p>",
        );
    }
    out.push_str("<div class=\"tablewrap\"><table class=\"data sortable\" id=\"functions-table\">");
    let mut cols = vec![("function", false), ("library", false)];
    if has_binding {
        cols.push(("binding", false));
    }
    cols.extend([
        ("calls", true),
        ("arg bytes", true),
        ("buffer bytes", true),
        ("boundary time", true),
        ("native", true),
        ("marshal-in", true),
        ("marshal-out", true),
        ("gil wait", true),
        ("construction", true),
        ("p50", true),
        ("p90", true),
        ("p99", true),
        ("max", true),
    ]);
    if has_unsplit {
        cols.push(("whole call", true));
    }
    out.push_str(&header(&cols));
    out.push_str("<tbody>");
    let max = report
        .functions
        .iter()
        .map(|f| f.total_ns)
        .max()
        .unwrap_or(0);
    for (i, f) in report.functions.iter().enumerate() {
        let _ = write!(
            out,
            "<tr id=\"{}\"><td class=\"name mono\" title=\"{}\"><a href=\"#lat-{i}\">{}</a></td><td class=\"mono\" title=\"{}\">{}</td>",
            function_anchor(i),
            esc(&f.function),
            esc(&f.function),
            esc(&f.library),
            esc(library_name(&f.library)),
        );
        if has_binding {
            let label = match (f.binding.as_str(), f.binding_detail.as_str()) {
                ("", _) => "-".to_string(),
                (b, "") => b.to_string(),
                (b, d) => format!("{b} ({d})"),
            };
            let _ = write!(out, "<td class=\"mono\">{}</td>", esc(&label));
        }
        out.push_str(&num_count(f.calls));
        out.push_str(&num_bytes(f.arg_bytes));
        out.push_str(&num_bytes(f.buffer_bytes));
        let time = f.time();
        out.push_str(&bar_cell(&time, max));
        for (_, &v) in time.iter() {
            out.push_str(&num_ns(v));
        }
        for v in [
            f.native_p50_ns,
            f.native_p90_ns,
            f.native_p99_ns,
            f.native_max_ns,
        ] {
            out.push_str(&num_ns(v));
        }
        if has_unsplit {
            out.push_str(&num_ns(f.unsplit_ns));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div></section>");
    out
}

/// One row of the call-site table, with the anchor recommendations link to.
pub(crate) struct SiteRow<'a> {
    pub anchor: String,
    pub function_index: usize,
    pub site: &'a SiteSummary,
}

fn site_total(s: &SiteSummary) -> u64 {
    s.time.total() + s.unsplit_ns
}

/// The sites to list: the costliest `max`, plus every one a recommendation points at.
pub(crate) fn collect_sites<'a>(report: &'a Report, max: usize, recs: &[Rec]) -> Vec<SiteRow<'a>> {
    let mut all: Vec<(usize, &SiteSummary)> = report
        .functions
        .iter()
        .enumerate()
        .flat_map(|(i, f)| f.sites.iter().map(move |s| (i, s)))
        .collect();
    all.sort_by(|a, b| {
        site_total(b.1)
            .cmp(&site_total(a.1))
            .then(b.1.calls.cmp(&a.1.calls))
            .then(a.1.file.cmp(&b.1.file))
            .then(a.1.line.cmp(&b.1.line))
            .then(a.0.cmp(&b.0))
    });
    all.into_iter()
        .enumerate()
        .filter(|(rank, (_, s))| {
            *rank < max
                || recs.iter().any(|r| {
                    r.site
                        .as_ref()
                        .is_some_and(|(f, l)| *f == s.file && *l == s.line)
                })
        })
        .map(|(rank, (fi, s))| SiteRow {
            anchor: format!("site-{rank}"),
            function_index: fi,
            site: s,
        })
        .collect()
}

pub(crate) fn sites_section(sites: &[SiteRow<'_>], report: &Report) -> String {
    let total_sites: usize = report.functions.iter().map(|f| f.sites.len()).sum();
    let mut out = String::from("<section class=\"card\" id=\"sites\"><h2>Call sites</h2>");
    if total_sites == 0 {
        out.push_str("<p class=\"note\">No Python call site was recorded (the callers were not Python, or stacks were off).</p></section>");
        return out;
    }
    let _ = write!(
        out,
        "<p class=\"note\">The Python lines that called into C{}. Construction is time spent building ctypes objects passed to the call; \
         fresh buffers counts calls that received an object built just for them.</p>",
        if sites.len() < total_sites { format!(", costliest {} of {}", sites.len(), total_sites) } else { String::new() }
    );
    out.push_str("<div class=\"tablewrap\"><table class=\"data sortable\" id=\"sites-table\">");
    out.push_str(&header(&[
        ("site", false),
        ("in", false),
        ("calls into", false),
        ("calls", true),
        ("boundary time", true),
        ("native", true),
        ("marshal-in", true),
        ("marshal-out", true),
        ("gil wait", true),
        ("construction", true),
        ("buffer bytes", true),
        ("fresh buffers", true),
    ]));
    out.push_str("<tbody>");
    let max = sites.iter().map(|r| site_total(r.site)).max().unwrap_or(0);
    for r in sites {
        let s = r.site;
        let f = &report.functions[r.function_index];
        let _ = write!(
            out,
            "<tr id=\"{}\"><td class=\"name mono\" data-v=\"{}:{:08}\" title=\"{}:{}\">{}:{}</td><td class=\"mono\">{}</td>\
             <td class=\"mono\"><a href=\"#{}\">{}</a></td>",
            r.anchor,
            esc(&s.file),
            s.line,
            esc(&s.file),
            s.line,
            esc(&s.file),
            s.line,
            esc(&s.function),
            function_anchor(r.function_index),
            esc(&format!("{}!{}", library_name(&f.library), f.function)),
        );
        out.push_str(&num_count(s.calls));
        out.push_str(&bar_cell(&s.time, max));
        for (_, &v) in s.time.iter() {
            out.push_str(&num_ns(v));
        }
        out.push_str(&num_bytes(s.buffer_bytes));
        out.push_str(&num_count(s.fresh_buffer_calls));
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div></section>");
    out
}
