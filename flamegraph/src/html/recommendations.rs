//! The recommendations, read from the report's JSON form so this crate doesn't depend on the exact
//! Rust type the analyzer gives them (fields are read by name; unknown shapes are shown as JSON).

use std::fmt::Write;

use ffiprof_analyzer::Report;
use serde_json::Value;

use super::tables::{function_anchor, SiteRow};
use crate::format::{esc, fmt_ns};

/// One recommendation, as much as could be read of it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rec {
    pub kind: String,
    pub function: Option<String>,
    pub library: Option<String>,
    pub site: Option<(String, u32)>,
    pub savings_ns: Option<u64>,
    pub savings_percent: Option<f64>,
    /// Where the estimate is a lower bound: the most the change can save.
    pub upper_bound_ns: Option<u64>,
    pub confidence: Option<String>,
    /// How the estimate was made: `measured ~540ns ± 30ns a call`, `modeled ~300ns a call`.
    pub estimate: Option<String>,
    pub suggestion: Option<String>,
    pub evidence: Vec<(String, String)>,
    /// A before/after code sketch of the change, where the analyzer has one.
    pub example: Option<String>,
    /// Set when the entry wasn't an object: shown verbatim.
    pub raw: Option<String>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "—".to_string(),
        other => other.to_string(),
    }
}

fn site_of(v: &Value) -> Option<(String, u32)> {
    match v {
        Value::Object(o) => {
            let file = o.get("file")?.as_str()?.to_string();
            let line = o.get("line").and_then(Value::as_u64).unwrap_or(0) as u32;
            Some((file, line))
        }
        Value::String(s) => {
            let (file, line) = s.rsplit_once(':')?;
            Some((file.to_string(), line.parse().ok()?))
        }
        _ => None,
    }
}

fn parse(v: &Value) -> Rec {
    let Value::Object(o) = v else {
        return Rec {
            kind: "note".into(),
            raw: Some(text(v)),
            ..Rec::default()
        };
    };
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
    let evidence = match o.get("evidence") {
        Some(Value::Object(e)) => e.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![("evidence".to_string(), text(other))],
    };
    Rec {
        kind: s("kind").unwrap_or_else(|| "recommendation".into()),
        function: s("function"),
        library: s("library"),
        site: o.get("site").and_then(site_of),
        savings_ns: o.get("estimated_savings_ns").and_then(Value::as_u64),
        savings_percent: o.get("savings_percent").and_then(Value::as_f64),
        upper_bound_ns: o
            .get("evidence")
            .and_then(|e| e.get("saving_upper_bound_ns"))
            .and_then(Value::as_u64),
        confidence: o.get("confidence").filter(|c| !c.is_null()).map(text),
        estimate: o.get("estimate").and_then(estimate_of),
        suggestion: s("suggestion"),
        evidence,
        example: None,
        raw: None,
    }
}

/// The report's recommendations, best first, as the analyzer ranked them.
pub(crate) fn from_report(report: &Report) -> Vec<Rec> {
    let Ok(v) = serde_json::to_value(report) else {
        return Vec::new();
    };
    match v.get("recommendations") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| Rec {
                example: report.recommendations.get(i).and_then(|r| r.example()),
                ..parse(v)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The `estimate` object as words; `None` when it is not one.
fn estimate_of(v: &Value) -> Option<String> {
    let method = v.get("method")?.as_str()?;
    let per_call = v.get("per_call_ns")?.as_f64()?;
    let per_call = fmt_ns(per_call.abs().round() as u64);
    let sign = if v["per_call_ns"].as_f64().is_some_and(|p| p < 0.0) {
        " (a cost)"
    } else {
        ""
    };
    Some(match v.get("spread_ns").and_then(Value::as_f64) {
        Some(spread) => format!(
            "{method} ~{per_call} ± {} a call{sign}",
            fmt_ns(spread.round() as u64)
        ),
        None => format!("{method} ~{per_call} a call{sign}"),
    })
}

fn humanize(kind: &str) -> String {
    let s = kind.replace(['_', '-'], " ");
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => s,
    }
}

/// The estimated-savings line of one recommendation (empty when it has none), with the upper
/// bound where the estimate is a lower one.
fn savings(r: &Rec, threads: u32) -> String {
    if r.savings_ns.is_none() && r.savings_percent.is_none() {
        return String::new();
    }
    if r.savings_ns == Some(0) {
        return match &r.estimate {
            Some(e) if e.starts_with("measured") => format!(
                "<p class=\"savings\">No time claimed (correctness); the change: {}</p>",
                esc(e)
            ),
            _ => String::new(),
        };
    }
    let mut out = String::from("<p class=\"savings\">Estimated savings: ");
    if let Some(ns) = r.savings_ns {
        out.push_str(&esc(&fmt_ns(ns)));
    }
    if let Some(p) = r.savings_percent {
        match threads {
            t if t > 1 => {
                let _ = write!(out, " ({p:.1}% of the {t} threads' time)");
            }
            _ => {
                let _ = write!(out, " ({p:.1}% of the run)");
            }
        }
    }
    if let Some(upper) = r
        .upper_bound_ns
        .filter(|&u| r.savings_ns.is_some_and(|s| u > s))
    {
        let _ = write!(
            out,
            ", up to {} (a lower bound: the most the change can save is the Python time between the calls)",
            esc(&fmt_ns(upper))
        );
    }
    if let Some(e) = &r.estimate {
        let _ = write!(out, " · {}", esc(e));
    }
    out.push_str("</p>");
    out
}

pub(crate) fn section(recs: &[Rec], report: &Report, sites: &[SiteRow<'_>]) -> String {
    let mut out = String::from("<section class=\"card\" id=\"advice\"><h2>Recommendations</h2>");
    if recs.is_empty() {
        out.push_str("<p class=\"note\">No recommendation: nothing in this profile matched a rule of the analyzer.</p></section>");
        return out;
    }
    out.push_str("<p class=\"note\">Ranked by estimated savings. Each links to the call site and the function it is about.</p>");
    for r in recs {
        out.push_str("<div class=\"rec\">");
        if let Some(raw) = &r.raw {
            let _ = write!(out, "<p class=\"mono\">{}</p></div>", esc(raw));
            continue;
        }
        let _ = write!(out, "<h3>{}", esc(&humanize(&r.kind)));
        if let Some(f) = &r.function {
            let lib = r
                .library
                .as_deref()
                .map(|l| l.rsplit('/').next().unwrap_or(l));
            let name = match lib {
                Some(l) => format!("{l}!{f}"),
                None => f.clone(),
            };
            let index = report.functions.iter().position(|x| {
                x.function == *f
                    && r.library
                        .as_ref()
                        .is_none_or(|l| x.library == *l || x.library.ends_with(&format!("/{l}")))
            });
            match index {
                Some(i) => {
                    let _ = write!(
                        out,
                        " · <a class=\"mono\" href=\"#{}\">{}</a>",
                        function_anchor(i),
                        esc(&name)
                    );
                }
                None => {
                    let _ = write!(out, " · <span class=\"mono\">{}</span>", esc(&name));
                }
            }
        }
        if let Some(c) = &r.confidence {
            let _ = write!(out, "<span class=\"tag\">confidence {}</span>", esc(c));
        }
        out.push_str("</h3>");
        out.push_str(&savings(r, report.meta.threads));
        if let Some(s) = &r.suggestion {
            let _ = write!(out, "<p>{}</p>", esc(s));
        }
        if let Some((file, line)) = &r.site {
            let row = sites
                .iter()
                .filter(|s| s.site.file == *file && s.site.line == *line)
                .find(|s| {
                    r.function
                        .as_ref()
                        .is_none_or(|f| report.functions[s.function_index].function == *f)
                })
                .or_else(|| {
                    sites
                        .iter()
                        .find(|s| s.site.file == *file && s.site.line == *line)
                });
            let label = esc(&format!("{file}:{line}"));
            match row {
                Some(s) => {
                    let _ = write!(
                        out,
                        "<p>At <a class=\"mono\" href=\"#{}\">{label}</a></p>",
                        s.anchor
                    );
                }
                None => {
                    let _ = write!(out, "<p>At <span class=\"mono\">{label}</span></p>");
                }
            }
        }
        if let Some(code) = &r.example {
            let _ = write!(out, "<pre class=\"example mono\">{}</pre>", esc(code));
        }
        if !r.evidence.is_empty() {
            out.push_str("<dl>");
            for (k, v) in &r.evidence {
                let _ = write!(
                    out,
                    "<dt>{}</dt><dd class=\"mono\">{}</dd>",
                    esc(&k.replace('_', " ")),
                    esc(v)
                );
            }
            out.push_str("</dl>");
        }
        out.push_str("</div>");
    }
    out.push_str("</section>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_documented_fields_and_tolerates_others() {
        let r = parse(&json!({
            "kind": "batch_calls", "function": "cos", "library": "/lib/libm.so.6",
            "site": {"file": "app.py", "line": 12}, "estimated_savings_ns": 1500, "savings_percent": 42.5,
            "confidence": "high", "evidence": {"calls": 1000, "per_call_ns": 370}, "suggestion": "Batch."
        }));
        assert_eq!(r.kind, "batch_calls");
        assert_eq!(r.site, Some(("app.py".into(), 12)));
        assert_eq!(r.savings_ns, Some(1500));
        assert_eq!(
            r.evidence,
            vec![
                ("calls".into(), "1000".into()),
                ("per_call_ns".into(), "370".into())
            ]
        );
        let odd = parse(&json!("just text"));
        assert_eq!(odd.raw.as_deref(), Some("just text"));
        assert_eq!(
            parse(&json!({"site": "a.py:3"})).site,
            Some(("a.py".into(), 3))
        );
        assert_eq!(humanize("fresh_buffer"), "Fresh buffer");
    }

    #[test]
    fn a_lower_bound_estimate_shows_its_upper_bound() {
        let mut r = parse(&json!({
            "kind": "reuse-buffer", "estimated_savings_ns": 9_690_000, "savings_percent": 6.8,
            "evidence": {"saving_upper_bound_ns": 41_830_000}
        }));
        assert_eq!(r.upper_bound_ns, Some(41_830_000));
        let line = savings(&r, 1);
        assert!(
            line.contains("9.69ms (6.8% of the run), up to 41.83ms (a lower bound"),
            "{line}"
        );
        r.upper_bound_ns = Some(9_000_000);
        assert!(!savings(&r, 1).contains("up to"), "{}", savings(&r, 1));
        r.savings_ns = None;
        r.savings_percent = None;
        assert_eq!(savings(&r, 1), "");
    }

    #[test]
    fn the_estimate_says_how_it_was_made() {
        let r = parse(&json!({
            "kind": "reuse-buffer", "estimated_savings_ns": 9_690_000, "savings_percent": 6.8,
            "estimate": {"method": "measured", "per_call_ns": 540.2, "spread_ns": 31.0}
        }));
        let line = savings(&r, 4);
        assert!(
            line.contains("9.69ms (6.8% of the 4 threads' time) · measured ~540ns ± 31ns a call"),
            "{line}"
        );
        let r = parse(&json!({
            "kind": "declare-argtypes", "estimated_savings_ns": 0, "savings_percent": 0.0,
            "estimate": {"method": "measured", "per_call_ns": -103.0, "spread_ns": 6.0}
        }));
        assert!(
            savings(&r, 1).contains("the change: measured ~103ns ± 6ns a call (a cost)"),
            "{}",
            savings(&r, 1)
        );
        let r = parse(&json!({
            "kind": "batch", "estimated_savings_ns": 1_000_000, "savings_percent": 1.0,
            "estimate": {"method": "modeled", "per_call_ns": 300.0, "spread_ns": null}
        }));
        assert!(
            savings(&r, 1).contains("· modeled ~300ns a call"),
            "{}",
            savings(&r, 1)
        );
    }
}
