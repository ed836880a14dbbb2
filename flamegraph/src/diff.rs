//! Before/after comparison: per-function deltas and a differential flamegraph — the view a user
//! wants after following a recommendation (did batching cut calls? did marshal-in go away?).
//!
//! Functions are matched by library file name and symbol, not by full path, so a profile taken in
//! another virtualenv or container still lines up.

use std::collections::BTreeMap;
use std::fmt::Write;

use ffiprof_profile::Profile;

use crate::folded::{fold, FoldOptions, Weight};
use crate::format::{esc, fmt_bytes, fmt_count, fmt_delta, fmt_ns};
use crate::stacks::Costs;
use crate::svg::{self, SvgOptions};

/// One function in either profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionDelta {
    /// Library file name (no directory).
    pub library: String,
    pub function: String,
    /// `None` when the function was not called in that profile.
    pub before: Option<Costs>,
    pub after: Option<Costs>,
}

impl FunctionDelta {
    fn get(&self, side: Option<Costs>) -> Costs {
        side.unwrap_or_default()
    }

    /// Change in boundary time, after minus before.
    pub fn delta_ns(&self) -> i128 {
        self.get(self.after).total_ns() as i128 - self.get(self.before).total_ns() as i128
    }
}

/// The comparison of two profiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Largest change in boundary time first.
    pub functions: Vec<FunctionDelta>,
    pub before_total: Costs,
    pub after_total: Costs,
}

/// Compares two profiles function by function.
pub fn compare(before: &Profile, after: &Profile) -> Diff {
    let mut map: BTreeMap<(String, String), FunctionDelta> = BTreeMap::new();
    let mut before_total = Costs::default();
    let mut after_total = Costs::default();
    for (profile, is_after) in [(before, false), (after, true)] {
        for f in &profile.functions {
            let key = (f.library_name().to_string(), f.function.clone());
            let entry = map.entry(key.clone()).or_insert_with(|| FunctionDelta {
                library: key.0.clone(),
                function: key.1.clone(),
                before: None,
                after: None,
            });
            let c = Costs::of_function(f);
            let (side, total) = if is_after {
                (&mut entry.after, &mut after_total)
            } else {
                (&mut entry.before, &mut before_total)
            };
            side.get_or_insert_with(Costs::default).add(&c);
            total.add(&c);
        }
    }
    let mut functions: Vec<FunctionDelta> = map.into_values().collect();
    functions.sort_by(|a, b| {
        b.delta_ns()
            .abs()
            .cmp(&a.delta_ns().abs())
            .then(a.function.cmp(&b.function))
            .then(a.library.cmp(&b.library))
    });
    Diff {
        functions,
        before_total,
        after_total,
    }
}

/// Differential folded stacks (`stack before after`), as inferno's `diff-folded` writes them.
pub fn differential_folded(
    before: &Profile,
    after: &Profile,
    weight: Weight,
) -> crate::Result<String> {
    let opts = FoldOptions { weight };
    svg::differential_text(&fold(before, &opts), &fold(after, &opts))
}

/// The differential flamegraph SVG: widths from `after`; red grew, blue shrank.
pub fn differential_svg(
    before: &Profile,
    after: &Profile,
    weight: Weight,
    opts: &SvgOptions,
) -> crate::Result<String> {
    let o = FoldOptions { weight };
    svg::render_differential(&fold(before, &o), &fold(after, &o), opts)
}

fn per_call(c: &Costs) -> u64 {
    c.total_ns().checked_div(c.calls).unwrap_or(0)
}

/// The terminal form of a diff: totals, then one row per function.
pub fn render_text(diff: &Diff) -> String {
    let (b, a) = (&diff.before_total, &diff.after_total);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "boundary time {} → {} ({}), calls {} → {} ({}), bytes {} → {}",
        fmt_ns(b.total_ns()),
        fmt_ns(a.total_ns()),
        fmt_delta(b.total_ns(), a.total_ns(), fmt_ns),
        b.calls,
        a.calls,
        fmt_delta(b.calls, a.calls, |n| n.to_string()),
        fmt_bytes(b.arg_bytes + b.buffer_bytes),
        fmt_bytes(a.arg_bytes + a.buffer_bytes),
    );
    if diff.functions.is_empty() {
        out.push_str("\nNeither profile recorded a boundary call.\n");
        return out;
    }
    let header = [
        "function",
        "library",
        "calls",
        "Δ calls",
        "total",
        "Δ total",
        "per call",
        "Δ native",
        "Δ marshal-in",
        "Δ marshal-out",
        "Δ gil wait",
        "Δ construct",
        "Δ bytes",
    ];
    let rows: Vec<Vec<String>> = diff
        .functions
        .iter()
        .map(|f| {
            let (b, a) = (f.get(f.before), f.get(f.after));
            vec![
                f.function.clone(),
                f.library.clone(),
                format!("{} → {}", side_count(f.before), side_count(f.after)),
                fmt_delta(b.calls, a.calls, |n| n.to_string()),
                format!("{} → {}", fmt_ns(b.total_ns()), fmt_ns(a.total_ns())),
                fmt_delta(b.total_ns(), a.total_ns(), fmt_ns),
                format!("{} → {}", fmt_ns(per_call(&b)), fmt_ns(per_call(&a))),
                fmt_delta(b.time.native, a.time.native, fmt_ns),
                fmt_delta(b.time.marshal_in, a.time.marshal_in, fmt_ns),
                fmt_delta(b.time.marshal_out, a.time.marshal_out, fmt_ns),
                fmt_delta(b.time.gil_wait, a.time.gil_wait, fmt_ns),
                fmt_delta(b.time.construction, a.time.construction, fmt_ns),
                fmt_delta(
                    b.arg_bytes + b.buffer_bytes,
                    a.arg_bytes + a.buffer_bytes,
                    fmt_bytes,
                ),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&ffiprof_analyzer::text::table(&header, &rows));
    out
}

fn side_count(c: Option<Costs>) -> String {
    c.map(|c| c.calls.to_string()).unwrap_or_else(|| "—".into())
}

/// Options for [`render_html`].
#[derive(Debug, Clone, Default)]
pub struct DiffHtmlOptions {
    pub title: Option<String>,
    /// Names shown for the two sides (file names, usually).
    pub before_name: String,
    pub after_name: String,
    pub svg: SvgOptions,
}

fn delta_cell(before: u64, after: u64, unit: fn(u64) -> String) -> String {
    let class = match after.cmp(&before) {
        std::cmp::Ordering::Greater => " delta-up",
        std::cmp::Ordering::Less => " delta-down",
        std::cmp::Ordering::Equal => "",
    };
    format!(
        "<td class=\"num{class}\" data-v=\"{}\">{}</td>",
        after as i128 - before as i128,
        esc(&fmt_delta(before, after, unit))
    )
}

/// The diff as a self-contained HTML page (same look and assets as the report).
pub fn render_html(before: &Profile, after: &Profile, options: &DiffHtmlOptions) -> String {
    let diff = compare(before, after);
    let title = options
        .title
        .clone()
        .unwrap_or_else(|| "ffiprof diff".to_string());
    let mut body = String::new();
    let _ = write!(body, "<header class=\"top\"><h1>{}</h1>", esc(&title));
    for (label, name, p) in [
        ("before", &options.before_name, before),
        ("after", &options.after_name, after),
    ] {
        let _ = write!(
            body,
            "<div class=\"cmd mono\">{label}: {} {}</div>",
            esc(name),
            esc(&if p.meta.command.is_empty() {
                String::new()
            } else {
                format!("— $ {}", p.meta.command.join(" "))
            })
        );
    }
    body.push_str("<nav><a href=\"#summary\">Summary</a><a href=\"#functions\">Functions</a><a href=\"#flamegraph\">Differential flamegraph</a></nav></header><main>");

    let (b, a) = (&diff.before_total, &diff.after_total);
    body.push_str(
        "<section class=\"card\" id=\"summary\"><h2>Summary</h2><div class=\"headline\">",
    );
    for (k, bv, av, unit) in [
        (
            "boundary time",
            b.total_ns(),
            a.total_ns(),
            fmt_ns as fn(u64) -> String,
        ),
        ("calls", b.calls, a.calls, fmt_count as fn(u64) -> String),
        ("native", b.time.native, a.time.native, fmt_ns),
        (
            "marshaling",
            b.time.marshal_in + b.time.marshal_out + b.time.construction,
            a.time.marshal_in + a.time.marshal_out + a.time.construction,
            fmt_ns,
        ),
        ("GIL wait", b.time.gil_wait, a.time.gil_wait, fmt_ns),
        (
            "bytes",
            b.arg_bytes + b.buffer_bytes,
            a.arg_bytes + a.buffer_bytes,
            fmt_bytes,
        ),
    ] {
        let _ = write!(
            body,
            "<div><div class=\"v\">{} → {}</div><div class=\"k\">{} · {}</div></div>",
            esc(&unit(bv)),
            esc(&unit(av)),
            esc(k),
            esc(&fmt_delta(bv, av, unit))
        );
    }
    body.push_str("</div></section>");

    body.push_str(
        "<section class=\"card\" id=\"functions\"><h2>Functions</h2><p class=\"note\">Largest change in boundary time first; \
         red grew, green shrank. Click a column to sort.</p><div class=\"tablewrap\"><table class=\"data sortable\" id=\"diff-table\">",
    );
    body.push_str(
        "<thead><tr><th data-type=\"text\">function</th><th data-type=\"text\">library</th>",
    );
    for h in [
        "calls",
        "Δ calls",
        "boundary time",
        "Δ time",
        "Δ native",
        "Δ marshal-in",
        "Δ marshal-out",
        "Δ gil wait",
        "Δ construction",
        "Δ bytes",
    ] {
        let _ = write!(body, "<th class=\"num\" data-type=\"num\">{h}</th>");
    }
    body.push_str("</tr></thead><tbody>");
    for f in &diff.functions {
        let (fb, fa) = (f.get(f.before), f.get(f.after));
        let _ = write!(
            body,
            "<tr><td class=\"name mono\">{}</td><td class=\"mono\">{}</td>",
            esc(&f.function),
            esc(&f.library)
        );
        let _ = write!(
            body,
            "<td class=\"num\" data-v=\"{}\">{} → {}</td>",
            fa.calls,
            esc(&side_count(f.before)),
            esc(&side_count(f.after))
        );
        body.push_str(&delta_cell(fb.calls, fa.calls, fmt_count));
        let _ = write!(
            body,
            "<td class=\"num\" data-v=\"{}\">{} → {}</td>",
            fa.total_ns(),
            fmt_ns(fb.total_ns()),
            fmt_ns(fa.total_ns())
        );
        body.push_str(&delta_cell(fb.total_ns(), fa.total_ns(), fmt_ns));
        for (part, &x) in fb.time.iter() {
            body.push_str(&delta_cell(x, *fa.time.get(part), fmt_ns));
        }
        body.push_str(&delta_cell(
            fb.arg_bytes + fb.buffer_bytes,
            fa.arg_bytes + fa.buffer_bytes,
            fmt_bytes,
        ));
        body.push_str("</tr>");
    }
    body.push_str("</tbody></table></div></section>");

    let svg_result = differential_svg(before, after, Weight::Time, &options.svg);
    body.push_str(&crate::html::flamegraph_section(
        svg_result,
        "Differential flamegraph",
        "Widths are the <em>after</em> profile's boundary time; red frames grew, blue frames shrank (inferno's differential mode). \
         Frames that disappeared entirely have no width after, so look for them in the table.",
        "",
    ));
    let _ = write!(
        body,
        "<footer>ffiprof {} · self-contained report, works offline</footer></main>",
        env!("CARGO_PKG_VERSION")
    );
    crate::html::page(&title, &body)
}
