//! Small text helpers shared by the HTML pages: escaping, number formats, dates.

pub(crate) use ffiprof_analyzer::text::{fmt_bytes, fmt_ns};

/// Escapes text for HTML element content and double-quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An integer with thin thousands separators: `1 234 567`.
pub(crate) fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// A signed difference with its sign and relative change: `+1.2ms (+35%)`.
pub(crate) fn fmt_delta(before: u64, after: u64, unit: fn(u64) -> String) -> String {
    let (sign, mag) = if after >= before {
        ('+', after - before)
    } else {
        ('−', before - after)
    };
    let pct = if before == 0 {
        if after == 0 {
            String::new()
        } else {
            " (new)".to_string()
        }
    } else {
        let p = (after as f64 - before as f64) / before as f64 * 100.0;
        format!(" ({}{:.0}%)", if p >= 0.0 { "+" } else { "−" }, p.abs())
    };
    if mag == 0 {
        return "0".to_string();
    }
    format!("{sign}{}{pct}", unit(mag))
}

/// Unix nanoseconds as `YYYY-MM-DD HH:MM:SS UTC` (civil-from-days, so no date crate is needed).
pub(crate) fn fmt_unix_ns(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(fmt_count(1234567), "1\u{202f}234\u{202f}567");
        assert_eq!(fmt_count(12), "12");
        assert_eq!(fmt_unix_ns(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            fmt_unix_ns(1_700_000_000_000_000_000),
            "2023-11-14 22:13:20 UTC"
        );
        assert_eq!(fmt_delta(100, 150, |n| n.to_string()), "+50 (+50%)");
        assert_eq!(fmt_delta(100, 50, |n| n.to_string()), "−50 (−50%)");
        assert_eq!(fmt_delta(0, 5, |n| n.to_string()), "+5 (new)");
        assert_eq!(fmt_delta(5, 5, |n| n.to_string()), "0");
    }
}
