//! What a C function's name says: its bulk siblings and its release partner. Names never decide
//! whether a function returns a pointer: that is for the types and values the profile records.
//!
//! C libraries name related functions by convention (`fx_scale` / `fx_scale_many`, `obj_new` /
//! `obj_free`, `XCreateWindow` / `XDestroyWindow`). Names are split into words — at `_` and at
//! lower-to-upper case changes — so that a word is only ever replaced whole (`open` in `sqlite3_open`,
//! never in `fopen_s`'s middle).

/// Suffixes a bulk variant of a per-element function commonly carries, most telling first.
const BULK_SUFFIXES: &[&str] = &[
    "_many", "_array", "_batch", "_n", "_v", "_vec", "_bulk", "_all", "_arr", "s", "v", "Many",
    "Array", "Batch", "N", "V",
];

/// Suffixes that mark a function as the single-element form (`fx_scale_one` → `fx_scale_many`).
const SINGLE_SUFFIXES: &[&str] = &["_one", "_single", "_1", "One", "Single", "1"];

/// Allocation words and the words of the functions that undo them.
const PAIRS: &[(&str, &[&str])] = &[
    ("alloc", &["free", "dealloc", "release"]),
    ("malloc", &["free"]),
    ("calloc", &["free"]),
    ("create", &["destroy", "free", "delete", "release"]),
    ("new", &["delete", "free", "destroy", "release"]),
    ("open", &["close"]),
    ("fopen", &["fclose"]),
    ("acquire", &["release"]),
    ("retain", &["release"]),
    ("ref", &["unref"]),
];

/// The words of a name as byte ranges.
fn words(name: &str) -> Vec<(usize, usize)> {
    let bytes = name.as_bytes();
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'_' {
            if let Some(s) = start.take() {
                out.push((s, i));
            }
            continue;
        }
        let after_lower = i > 0 && bytes[i - 1].is_ascii_lowercase();
        // `XCreate` is `X` + `Create`: an upper-case letter followed by a lower-case one starts a word.
        let acronym_end = i > 0
            && bytes[i - 1].is_ascii_uppercase()
            && bytes.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
        let boundary = b.is_ascii_uppercase() && (after_lower || acronym_end);
        if boundary {
            if let Some(s) = start.take() {
                out.push((s, i));
            }
        }
        if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push((s, bytes.len()));
    }
    out
}

/// `replacement` written in the case style of `original` (`free`, `Free`, `FREE`).
fn in_case_of(original: &str, replacement: &str) -> String {
    if original.chars().all(|c| !c.is_ascii_lowercase())
        && original.chars().any(|c| c.is_ascii_uppercase())
    {
        replacement.to_ascii_uppercase()
    } else if original.starts_with(|c: char| c.is_ascii_uppercase()) {
        let mut s = replacement.to_string();
        s[..1].make_ascii_uppercase();
        s
    } else {
        replacement.to_string()
    }
}

/// Names a bulk variant of `name` would have, most likely first.
pub fn bulk_candidates(name: &str) -> Vec<String> {
    let mut stems = vec![name.to_string()];
    for s in SINGLE_SUFFIXES {
        if let Some(stem) = name.strip_suffix(s).filter(|stem| !stem.is_empty()) {
            stems.push(stem.to_string());
        }
    }
    let mut out = Vec::new();
    for stem in &stems {
        for suffix in BULK_SUFFIXES {
            let candidate = format!("{stem}{suffix}");
            if candidate != name && !out.contains(&candidate) {
                out.push(candidate);
            }
        }
    }
    out
}

/// The bulk siblings of `name` among `known` names, most likely first.
pub fn bulk_siblings<'a>(name: &str, known: &[&'a str]) -> Vec<&'a str> {
    bulk_candidates(name)
        .iter()
        .filter_map(|c| known.iter().copied().find(|k| *k == c))
        .collect()
}

/// Names of the functions that would release what `name` allocates, with the allocation word found.
pub fn release_candidates(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (start, end) in words(name) {
        let word = &name[start..end];
        for (alloc, releases) in PAIRS {
            if word.eq_ignore_ascii_case(alloc) {
                for release in *releases {
                    let candidate = format!(
                        "{}{}{}",
                        &name[..start],
                        in_case_of(word, release),
                        &name[end..]
                    );
                    if !out.contains(&candidate) {
                        out.push(candidate);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_snake_and_camel_case() {
        let name = "XCreateWindow_now";
        let w: Vec<&str> = words(name).iter().map(|&(s, e)| &name[s..e]).collect();
        assert_eq!(w, ["X", "Create", "Window", "now"]);
        let name = "fx__buf_alloc";
        let w: Vec<&str> = words(name).iter().map(|&(s, e)| &name[s..e]).collect();
        assert_eq!(w, ["fx", "buf", "alloc"]);
    }

    #[test]
    fn finds_bulk_siblings() {
        let known = ["fx_scale", "fx_scale_many", "fx_sum", "fx_sums", "other_n"];
        assert_eq!(bulk_siblings("fx_scale", &known), ["fx_scale_many"]);
        assert_eq!(bulk_siblings("fx_sum", &known), ["fx_sums"]);
        assert_eq!(bulk_siblings("fx_scale_one", &known), ["fx_scale_many"]);
        assert!(bulk_siblings("other", &known).contains(&"other_n"));
        assert!(bulk_siblings("fx_spin_ns", &known).is_empty());
        assert!(!bulk_candidates("f").contains(&"f".to_string()));
    }

    #[test]
    fn finds_release_partners() {
        assert!(release_candidates("fx_buf_alloc").contains(&"fx_buf_free".to_string()));
        assert_eq!(release_candidates("malloc"), ["free"]);
        assert!(release_candidates("obj_new").contains(&"obj_delete".to_string()));
        assert_eq!(release_candidates("sqlite3_open"), ["sqlite3_close"]);
        assert!(release_candidates("XCreateWindow").contains(&"XDestroyWindow".to_string()));
        assert!(release_candidates("Xm_CreateWindow").contains(&"Xm_DestroyWindow".to_string()));
        assert!(release_candidates("FX_OPEN").contains(&"FX_CLOSE".to_string()));
        assert!(release_candidates("fopen_s").contains(&"fclose_s".to_string()));
        assert!(release_candidates("renew").is_empty());
        assert!(release_candidates("fx_sum").is_empty());
    }
}
