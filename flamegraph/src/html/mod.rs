//! The self-contained HTML report: one file, no request to any other host (a Content-Security-Policy
//! forbids them), the same bytes for the same profile.
//!
//! The page is rendered in Rust (tables, latency plots, advice) so it reads fine even with scripts
//! off; `assets/report.js` adds sorting and the flamegraph search box, and inferno's own script in
//! the inline SVG does search and zoom. The flamegraph must be the first `<svg>` in the document:
//! inferno's script finds its SVG with `getElementsByTagName("svg")[0]`.

mod latency;
mod recommendations;
mod tables;

use std::fmt::Write;

use ffiprof_analyzer::Report;
use ffiprof_profile::Profile;

use crate::folded::{fold, FoldOptions, Weight};
use crate::format::{esc, fmt_bytes, fmt_count, fmt_ns, fmt_unix_ns};
use crate::svg::{self, SvgOptions};

const TEMPLATE: &str = include_str!("../../assets/report.html");
const CSS: &str = include_str!("../../assets/report.css");
const JS: &str = include_str!("../../assets/report.js");

/// Options for [`render`].
#[derive(Debug, Clone)]
pub struct HtmlOptions {
    /// Page title; defaults to `ffiprof — <command>`.
    pub title: Option<String>,
    /// What the flamegraph's widths stand for.
    pub weight: Weight,
    /// The call-site table lists the costliest sites up to this many (plus any a recommendation names).
    pub max_sites: usize,
    /// Latency plots are drawn for the costliest functions up to this many.
    pub max_latency_plots: usize,
    pub svg: SvgOptions,
}

impl Default for HtmlOptions {
    fn default() -> Self {
        HtmlOptions {
            title: None,
            weight: Weight::Time,
            max_sites: 200,
            max_latency_plots: 60,
            svg: SvgOptions {
                title: String::new(),
                ..SvgOptions::default()
            },
        }
    }
}

/// Fills `{{name}}` markers in one pass, so text inserted for one marker is never scanned for another.
pub(crate) fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|v| v.1.len()).sum::<usize>());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let key = &after[..end];
                match values.iter().find(|(k, _)| *k == key) {
                    Some((_, v)) => out.push_str(v),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Wraps a body in the page shell with the report's CSS and script.
pub(crate) fn page(title: &str, body: &str) -> String {
    fill(
        TEMPLATE,
        &[
            ("title", &esc(title)),
            ("version", env!("CARGO_PKG_VERSION")),
            ("css", CSS),
            ("body", body),
            ("js", JS),
        ],
    )
}

/// The legend of the split's colours, shared by the flamegraph, the bars and the diff page.
pub(crate) fn legend(weight: Weight) -> String {
    let parts: &[(&str, &str)] = match weight {
        Weight::Time => &[
            ("marshal-in", "marshal-in: Python call → C entry"),
            ("native", "native: inside the C function"),
            ("marshal-out", "marshal-out: C return → Python result"),
            ("gil-wait", "gil-wait: waiting for the GIL"),
            ("construction", "construction: building ctypes arguments"),
        ],
        Weight::Bytes => &[
            ("arg-bytes", "C argument bytes"),
            ("buffer-bytes", "bytes behind pointers"),
        ],
        Weight::Calls => &[],
    };
    let mut out = String::from("<div class=\"legend\">");
    for (class, text) in parts {
        let _ = write!(
            out,
            "<span><i class=\"sw-{class}\"></i>{}</span>",
            esc(text)
        );
    }
    out.push_str("</div>");
    out
}

/// The flamegraph section: inferno's SVG inline, with a search box wired to inferno's search.
pub(crate) fn flamegraph_section(
    svg_result: crate::Result<String>,
    heading: &str,
    note: &str,
    legend_html: &str,
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<section class=\"card\" id=\"flamegraph\"><h2>{}</h2>",
        esc(heading)
    );
    let _ = write!(out, "<p class=\"note\">{note}</p>{legend_html}");
    match svg_result {
        Ok(svg) => {
            out.push_str(
                "<div class=\"fg-tools\"><input id=\"fg-search\" type=\"search\" placeholder=\"search frames (regexp), Enter\" \
                 aria-label=\"search the flamegraph\"><button id=\"fg-go\" type=\"button\">Search</button>\
                 <button id=\"fg-reset\" type=\"button\">Reset search and zoom</button><span id=\"fg-status\" class=\"fg-status\"></span></div>",
            );
            out.push_str("<div class=\"flame\">");
            out.push_str(svg::strip_prolog(&svg));
            out.push_str("</div>");
        }
        Err(crate::Error::Empty) => {
            out.push_str("<p class=\"note\">Nothing to draw: no boundary call was recorded.</p>")
        }
        Err(e) => {
            let _ = write!(
                out,
                "<p class=\"warn\">The flamegraph could not be drawn: {}</p>",
                esc(&e.to_string())
            );
        }
    }
    out.push_str("</section>");
    out
}

fn default_title(profile: &Profile) -> String {
    let cmd = profile.meta.command.join(" ");
    if cmd.is_empty() {
        "ffiprof report".to_string()
    } else {
        format!("ffiprof — {cmd}")
    }
}

/// Renders the whole report. Infallible: a part that can't be drawn says so in the page.
pub fn render(profile: &Profile, report: &Report, options: &HtmlOptions) -> String {
    let title = options
        .title
        .clone()
        .unwrap_or_else(|| default_title(profile));
    let recs = recommendations::from_report(report);
    let sites = tables::collect_sites(report, options.max_sites, &recs);

    let mut body = String::new();
    body.push_str("<header class=\"top\">");
    let _ = write!(body, "<h1>{}</h1>", esc(&title));
    if !profile.meta.command.is_empty() {
        let _ = write!(
            body,
            "<div class=\"cmd mono\">$ {}</div>",
            esc(&profile.meta.command.join(" "))
        );
    }
    body.push_str(
        "<nav><a href=\"#summary\">Summary</a><a href=\"#advice\">Recommendations</a><a href=\"#flamegraph\">Flamegraph</a>\
         <a href=\"#functions\">Functions</a><a href=\"#latency\">Latency</a><a href=\"#sites\">Call sites</a><a href=\"#run\">Run</a></nav>",
    );
    body.push_str("</header><main>");

    body.push_str(&summary_section(profile, report));
    body.push_str(&recommendations::section(&recs, report, &sites));

    let folded = fold(
        profile,
        &FoldOptions {
            weight: options.weight,
        },
    );
    let drawn = svg::render_folded_counted(&folded, &options.svg);
    let dropped = drawn.as_ref().map(|d| d.1).unwrap_or(0);
    let svg_result = drawn.map(|d| d.0);
    let mut note = format!(
        "Python frames from the outermost (bottom) to the call site, then <code>library!function</code>, then where the time went. \
         Widths are {}. Click a frame to zoom, search by regular expression; the URL keeps both.",
        match options.weight {
            Weight::Time => "boundary time (ns)",
            Weight::Calls => "calls",
            Weight::Bytes => "bytes crossed",
        }
    );
    if dropped > 0 {
        // Say so: a thin C function missing from the graph is still in the tables below.
        let _ = write!(
            note,
            " {} frames too thin to draw are folded into their parents (the <code>{}</code> frame holds whole thin stacks); \
             the tables below still count them.",
            fmt_count(dropped as u64),
            esc(crate::folded::NARROW)
        );
    }
    body.push_str(&flamegraph_section(
        svg_result,
        "Flamegraph",
        &note,
        &legend(options.weight),
    ));

    body.push_str(&tables::functions_section(report));
    body.push_str(&latency::section(
        profile,
        report,
        options.max_latency_plots,
    ));
    body.push_str(&tables::sites_section(&sites, report));
    body.push_str(&run_section(profile, report));
    let _ = write!(
        body,
        "<footer>ffiprof {} · self-contained report, works offline</footer>",
        env!("CARGO_PKG_VERSION")
    );
    body.push_str("</main>");
    page(&title, &body)
}

fn summary_section(profile: &Profile, report: &Report) -> String {
    let mut t = crate::stacks::Costs::default();
    for f in &profile.functions {
        t.add(&crate::stacks::Costs::of_function(f));
    }
    let total = t.total_ns();
    let marshal = t.time.marshal_in + t.time.marshal_out + t.time.construction;
    let pct = |v: u64| {
        if total == 0 {
            0.0
        } else {
            v as f64 * 100.0 / total as f64
        }
    };
    let mut out = String::from(
        "<section class=\"card\" id=\"summary\"><h2>Summary</h2><div class=\"headline\">",
    );
    let cells = [
        (fmt_count(t.calls), "boundary calls".to_string()),
        (
            report.functions.len().to_string(),
            "C functions".to_string(),
        ),
        (fmt_ns(total), "boundary time".to_string()),
        (
            fmt_ns(t.time.native),
            format!("native ({:.0}%)", pct(t.time.native)),
        ),
        (
            fmt_ns(marshal),
            format!("marshaling ({:.0}%)", pct(marshal)),
        ),
        (
            fmt_ns(t.time.gil_wait),
            format!("GIL wait ({:.0}%)", pct(t.time.gil_wait)),
        ),
        (
            fmt_bytes(t.arg_bytes + t.buffer_bytes),
            "bytes crossed".to_string(),
        ),
        (fmt_ns(profile.meta.duration_ns), "run duration".to_string()),
    ];
    for (v, k) in cells {
        let _ = write!(
            out,
            "<div><div class=\"v\">{}</div><div class=\"k\">{}</div></div>",
            esc(&v),
            esc(&k)
        );
    }
    out.push_str("</div>");
    if profile.meta.timing_sample_every > 1 {
        let _ = write!(
            out,
            "<p class=\"note\">Times were measured on each call site's first 8 calls, then on 1 call in {} and scaled; counts and bytes are exact.</p>",
            profile.meta.timing_sample_every
        );
    }
    if !profile.meta.complete {
        out.push_str("<p class=\"warn\">This is a snapshot: the process had not finished when it was written.</p>");
    }
    out.push_str("</section>");
    out
}

fn run_section(profile: &Profile, report: &Report) -> String {
    let m = &profile.meta;
    let mut rows: Vec<(&str, String)> = vec![
        ("command", m.command.join(" ")),
        (
            "python",
            m.python
                .clone()
                .unwrap_or_else(|| "not a Python process".into()),
        ),
        (
            "pid",
            if m.ppid > 0 {
                format!("{} (parent {})", m.pid, m.ppid)
            } else {
                m.pid.to_string()
            },
        ),
    ];
    if !m.executable.is_empty() {
        rows.push(("executable", m.executable.clone()));
    }
    if m.start_unix_ns > 0 {
        rows.push(("started", fmt_unix_ns(m.start_unix_ns)));
    }
    rows.push(("duration", fmt_ns(m.duration_ns)));
    rows.push((
        "probe overhead",
        format!(
            "{} per timed interval (already subtracted)",
            fmt_ns(m.probe_overhead_ns)
        ),
    ));
    rows.push((
        "timing sampling",
        if m.timing_sample_every > 1 {
            format!("1 call in {}", m.timing_sample_every)
        } else {
            "every call".into()
        },
    ));
    rows.push((
        "stack sampling",
        if m.stack_sample_every > 1 {
            format!("1 call in {}", m.stack_sample_every)
        } else {
            "every call".into()
        },
    ));
    for (k, v) in [
        ("clock", &m.clock),
        ("mode", &m.mode),
        ("written because", &m.write_reason),
        ("agent", &m.agent_version),
    ] {
        if !v.is_empty() {
            rows.push((k, v.clone()));
        }
    }
    rows.push((
        "complete",
        if m.complete {
            "yes".into()
        } else {
            "no (snapshot of a running process)".into()
        },
    ));
    rows.push(("threads", m.threads.to_string()));
    rows.push(("total calls", fmt_count(report.meta.total_calls)));
    if m.dropped_calls > 0 {
        rows.push((
            "dropped calls",
            format!("{} (recorder tables full)", m.dropped_calls),
        ));
    }
    if !m.lib_filter.is_empty() {
        rows.push(("libraries", m.lib_filter.join(", ")));
    }
    for h in &report.meta.hooks_skipped {
        rows.push(("hook skipped", h.clone()));
    }
    let mut out =
        String::from("<section class=\"card\" id=\"run\"><h2>Run</h2><dl class=\"meta\">");
    for (k, v) in rows {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(&v));
    }
    out.push_str("</dl></section>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_single_pass() {
        assert_eq!(
            fill("a{{x}}b{{y}}c{{z}}", &[("x", "{{y}}"), ("y", "Y")]),
            "a{{y}}bYc{{z}}"
        );
        assert_eq!(fill("open {{ only", &[]), "open {{ only");
    }

    #[test]
    fn css_knows_every_part_colour() {
        for (name, color) in crate::svg::PART_COLORS {
            assert!(
                CSS.contains(&format!("--c-{name}: {color}")),
                "report.css lacks --c-{name}: {color}"
            );
        }
    }
}
