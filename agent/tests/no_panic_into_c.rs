//! No panic crosses into C (issue 12). Unwinding out of an `extern "C" fn` aborts the process,
//! and the agent's process is someone else's. This test reads every `extern "C" fn` defined in
//! the workspace's Rust source (the agent's hooks, loader and fork callbacks, pending calls,
//! signal handlers, the constructor, the attach entry, and the CLI side's few handlers) and
//! checks that each one either runs its work inside `runtime::guard` (`catch_unwind`) and keeps
//! outside it only code that cannot panic, or is made only of such code (a signal handler, which
//! may not allocate and so may not catch a panic either).
//!
//! "Cannot panic" is checked on the text, conservatively, outside every guard's closure:
//! - no macro (`panic!`, `assert!`, `format!`...), no indexing (`[`), no `+ - * / % << >>`
//!   (overflow and division panic in debug builds; wrapping methods are fine);
//! - every call is to C (`libc::…`, or a local whose type is an `extern "C" fn`), to a std
//!   operation on [`STD_CALLS`], or to an agent function on [`CHECKED_HELPERS`], whose own body
//!   is checked by the same rules.
//!
//! Known blind spots, left to review: a call through a parenthesised field, `(api.f)(x)`, is taken
//! to be a C API call (it is, in the agent); operators a type overloads (`==`, `Drop`) are not
//! modelled; `mem::zeroed` is trusted to be used on C structs only. Invalid atomic orderings,
//! which panic, are a compile error already (rustc's `invalid_atomic_ordering`).

use std::path::{Path, PathBuf};

/// Entries not guarded yet (none since the per-call hooks of issue 12's hot-path item were). An
/// entry listed here must fail the check, else the test fails: the list only shrinks.
const PENDING: &[&str] = &[];

/// Agent functions that code outside a guard may call: (file path suffix, name, why). Each body
/// is checked by the same rules as an entry.
const CHECKED_HELPERS: &[(&str, &str, &str)] = &[
    ("runtime.rs", "errno", "reads errno"),
    ("runtime.rs", "set_errno", "writes errno"),
    (
        "record/writer.rs",
        "futex_wait",
        "one system call (the signal handler's wait)",
    ),
    ("record/writer.rs", "futex_wake", "one system call"),
    (
        "record/writer.rs",
        "raise_default",
        "sigaction and raise (the signal handler's end)",
    ),
    ("record/writer.rs", "is_agent_handler", "an address compare"),
    (
        "python/builtin_call.rs",
        "full_bracket",
        "the bracketed builtins' full bracket, guarded, then the original call",
    ),
    (
        "hook/process.rs",
        "before",
        "the exec/_exit hooks' guarded write",
    ),
];

/// Operations of std and core that cannot panic, by the last segment of their path or method
/// name, with why.
const STD_CALLS: &[(&str, &str)] = &[
    (
        "get",
        "std's get methods return an Option; runtime::Original::get is an atomic load and a \
         transmute whose size check is at compile time",
    ),
    ("Some", "a constructor"),
    ("Ok", "a constructor"),
    ("Err", "a constructor"),
    (
        "Pointers",
        "hook::ffi's Fast::Pointers, a variant matched in the trampolines",
    ),
    ("load", "an atomic load"),
    ("store", "an atomic store"),
    ("swap", "an atomic swap"),
    ("fetch_add", "an atomic add (wraps)"),
    ("fetch_sub", "an atomic sub (wraps)"),
    ("compare_exchange", "an atomic compare-exchange"),
    ("is_null", "a pointer compare"),
    ("as_ptr", "a pointer cast"),
    ("as_mut_ptr", "a pointer cast"),
    ("cast", "a pointer cast"),
    ("null", "a null pointer"),
    ("null_mut", "a null pointer"),
    ("transmute", "sizes are checked at compile time"),
    ("zeroed", "of C structs, for which all-zero is valid"),
    ("from_ptr", "CStr::from_ptr: strlen"),
    ("id", "std::process::id: getpid"),
    ("from_millis", "Duration::from_millis: cannot overflow"),
    ("as_secs", "a field read"),
    ("subsec_nanos", "a field read"),
    ("as_ref", "Option::as_ref"),
    ("map", "Option::map (the closure is checked as text)"),
    ("map_or", "Option::map_or (the closure is checked as text)"),
    ("wrapping_sub", "wrapping arithmetic"),
];

/// The guard: its first argument (the default) is checked, its second (the work) is not.
const GUARD: &str = "guard";

const KEYWORDS: &[&str] = &[
    "if", "while", "match", "return", "for", "in", "fn", "as", "move", "unsafe", "loop", "let",
    "else", "mut", "ref", "where", "impl", "dyn", "pub", "crate", "super", "self", "const",
    "static", "type", "struct", "enum", "use", "mod", "extern", "true", "false", "break",
    "continue",
];

#[test]
fn every_entry_from_c_is_guarded_or_cannot_panic() {
    let root = workspace_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let this_file = Path::new(file!()).file_name().unwrap();
    let mut problems = Vec::new();
    let mut entries = Vec::new();
    let mut pending_seen = Vec::new();
    // Where `type` aliases of C function pointers are looked up.
    let all: String = files
        .iter()
        .map(|p| clean(&std::fs::read_to_string(p).unwrap()))
        .collect();
    for path in &files {
        if path.file_name() == Some(this_file) {
            continue;
        }
        let text = clean(&std::fs::read_to_string(path).unwrap());
        let rel = path.strip_prefix(&root).unwrap().display().to_string();
        for e in extern_fns(&text) {
            let at = format!("{rel}:{} {}", e.line, e.name);
            let found = check_body(&text, e.body.clone(), &all);
            if PENDING.contains(&e.name.as_str()) {
                pending_seen.push(e.name.clone());
                if found.is_empty() {
                    problems.push(format!("{at}: passes now; remove it from PENDING"));
                }
            } else {
                problems.extend(found.into_iter().map(|p| format!("{at}: {p}")));
            }
            entries.push(e.name);
        }
    }
    for (suffix, name, _) in CHECKED_HELPERS {
        // Calls are allowed by name: the name must be one function's, in the file named.
        let mut defs = Vec::new();
        for path in &files {
            let text = clean(&std::fs::read_to_string(path).unwrap());
            for body in fn_bodies(&text, name) {
                defs.push(path.strip_prefix(&root).unwrap().display().to_string());
                let found = check_body(&text, body, &all);
                problems.extend(found.into_iter().map(|p| format!("{suffix} {name}: {p}")));
            }
        }
        if defs.len() != 1 || !defs[0].ends_with(suffix) {
            problems.push(format!(
                "CHECKED_HELPERS: `fn {name}` must be defined once, in {suffix}: found in {defs:?}"
            ));
        }
    }
    for p in PENDING {
        if !pending_seen.iter().any(|s| s == p) {
            problems.push(format!("PENDING lists {p}, which is no entry any more"));
        }
    }
    // The scan must have seen the agent: a broken scan would pass silently.
    for known in [
        "agent_constructor",
        "ffiprof_attach_start",
        "after_dlopen",
        "after_dlsym",
        "gadget_for",
        "on_signal",
        "hook_sigaction",
        "fork_child",
        "at_exit",
        "restart_writer",
    ] {
        assert!(
            entries.iter().any(|e| e == known),
            "the scan of {} missed the entry {known}: {entries:?}",
            root.display()
        );
    }
    assert!(
        problems.is_empty(),
        "{} extern \"C\" entries checked; these may panic into C (wrap the work in \
         runtime::guard, or keep only panic-free code outside it):\n{}",
        entries.len(),
        problems.join("\n")
    );
}

/// The lint itself, on sources made to pass and to fail.
#[test]
fn the_lint_flags_what_can_panic_and_passes_what_cannot() {
    let flags = |src: &str| {
        let text = clean(src);
        let e = extern_fns(&text);
        assert_eq!(e.len(), 1, "{src}");
        check_body(&text, e[0].body.clone(), &text)
    };
    for bad in [
        "extern \"C\" fn a(v: &[u8]) -> u8 { v[0] }",
        "extern \"C\" fn a() { foo(); }",
        "extern \"C\" fn a(x: Option<u8>) { x.unwrap(); }",
        "extern \"C\" fn a(b: u8) -> u8 { b + 1 }",
        "extern \"C\" fn a(b: u8) { let mut c = b; c -= 1; }",
        "extern \"C\" fn a() { println!(\"x\"); }",
        "extern \"C\" fn a(v: &[u8]) -> u8 { runtime::guard(v[0], || 0) }",
        "unsafe extern \"C\" fn a() { fn inner() {} inner() }",
        "pub unsafe extern \"C\" fn a() -> i32 { let f: fn() -> i32 = g; f() }",
    ] {
        assert!(!flags(bad).is_empty(), "not flagged: {bad}");
    }
    for good in [
        "extern \"C\" fn a(v: &[u8]) -> u8 { guard(0, || v[0] + v.len().unwrap()) }",
        "extern \"C\" fn a() { /* v[0] + panic!() */ let s = \"a[0] + x!()\"; let c = '['; }",
        "extern \"C\" fn a() { let f: extern \"C\" fn() = unsafe { std::mem::transmute(1usize) }; f() }",
        "extern \"C\" fn a() -> i32 { type F = unsafe extern \"C\" fn() -> i32; let f: F = x; f() }",
        "extern \"C\" fn a(p: *mut u8) -> usize { if p.is_null() { return 0; } unsafe { libc::strlen(p.cast()) } }",
        "extern \"C\" fn a() { fn inner() { panic!() } }",
        "extern \"C\" fn a(t: u64) -> u64 { for _ in 0..3 { X.store(1, O); } t.wrapping_sub(1) }",
    ] {
        assert_eq!(flags(good), Vec::<String>::new(), "flagged: {good}");
    }
}

fn workspace_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let manifest = dir.join("Cargo.toml");
        if std::fs::read_to_string(&manifest).is_ok_and(|t| t.contains("[workspace]")) {
            return dir;
        }
        assert!(
            dir.pop(),
            "no workspace above {}",
            env!("CARGO_MANIFEST_DIR")
        );
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The source with comments blanked and literals reduced to letters, digits and `_` (so that
/// `"C"` stays and no bracket or operator inside a literal counts). Newlines stay where they were.
fn clean(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let lit = |ch: char| {
        if ch == '\n' {
            '\n'
        } else if ch.is_ascii_alphanumeric() {
            ch
        } else {
            '_'
        }
    };
    let ident = |ch: char| ch.is_ascii_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let at = |k: usize| c.get(k).copied().unwrap_or('\0');
        if at(i) == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if at(i) == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                if at(i) == '/' && at(i + 1) == '*' {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if at(i) == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else if i >= c.len() {
                    break;
                } else {
                    out.push(if c[i] == '\n' { '\n' } else { ' ' });
                    i += 1;
                }
            }
        } else if at(i) == 'r'
            && (at(i + 1) == '"' || (at(i + 1) == '#' && matches!(at(i + 2), '"' | '#')))
            && (i == 0 || !ident(c[i - 1]) || (c[i - 1] == 'b' && (i < 2 || !ident(c[i - 2]))))
        {
            // A raw string: r"…", r#"…"#.
            let mut hashes = 0;
            i += 1;
            while at(i) == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            out.push('"');
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                    i += 1 + hashes;
                    break;
                }
                out.push(lit(c[i]));
                i += 1;
            }
            out.push('"');
        } else if at(i) == '"' {
            out.push('"');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    out.push('_');
                    i += 1;
                }
                out.push(lit(at(i)));
                i += 1;
            }
            out.push('"');
            i += 1;
        } else if at(i) == '\'' && (at(i + 1) == '\\' || (at(i + 2) == '\'' && at(i + 1) != '\'')) {
            // A char literal (not a lifetime).
            i += 1;
            while i < c.len() && c[i] != '\'' {
                if c[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("'_'");
        } else {
            out.push(if c[i].is_ascii() { c[i] } else { ' ' });
            i += 1;
        }
    }
    out
}

struct Entry {
    name: String,
    line: usize,
    /// Byte range of the body, braces included.
    body: std::ops::Range<usize>,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

fn word_at(t: &[u8], i: usize, w: &str) -> bool {
    t[i..].starts_with(w.as_bytes())
        && (i == 0 || !is_ident(t[i - 1]))
        && t.get(i + w.len()).is_none_or(|b| !is_ident(*b))
}

fn skip_ws(t: &[u8], mut i: usize) -> usize {
    while i < t.len() && t[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn ident_end(t: &[u8], mut i: usize) -> usize {
    while i < t.len() && is_ident(t[i]) {
        i += 1;
    }
    i
}

/// The index of the bracket closing the one at `open`.
fn closing(t: &[u8], open: usize) -> usize {
    let (o, c) = (
        t[open],
        match t[open] {
            b'(' => b')',
            b'{' => b'}',
            b'[' => b']',
            _ => b'>',
        },
    );
    let mut depth = 0;
    for (k, b) in t.iter().enumerate().skip(open) {
        if *b == o {
            depth += 1;
        } else if *b == c && !(c == b'>' && k > 0 && t[k - 1] == b'-') {
            depth -= 1;
            if depth == 0 {
                return k;
            }
        }
    }
    panic!("unbalanced {}", o as char);
}

/// The body of a function whose parameter list opens at `paren`: None for a declaration.
fn body_after_params(t: &[u8], paren: usize) -> Option<std::ops::Range<usize>> {
    let mut k = closing(t, paren) + 1;
    while k < t.len() && t[k] != b'{' && t[k] != b';' {
        k += 1;
    }
    (t.get(k) == Some(&b'{')).then(|| k..closing(t, k) + 1)
}

/// Every `extern "ABI" fn name` definition (not types, not declarations).
fn extern_fns(text: &str) -> Vec<Entry> {
    let t = text.as_bytes();
    let mut out = Vec::new();
    for i in 0..t.len() {
        if !word_at(t, i, "extern") {
            continue;
        }
        let mut k = skip_ws(t, i + "extern".len());
        if t.get(k) == Some(&b'"') {
            k += 1 + t[k + 1..].iter().position(|b| *b == b'"').unwrap() + 1;
            k = skip_ws(t, k);
        }
        if !word_at(t, k, "fn") {
            continue;
        }
        let start = skip_ws(t, k + 2);
        let end = ident_end(t, start);
        if end == start {
            continue; // a function pointer type
        }
        let Some(paren) = t[end..].iter().position(|b| *b == b'(').map(|p| end + p) else {
            continue;
        };
        if let Some(body) = body_after_params(t, paren) {
            out.push(Entry {
                name: text[start..end].to_string(),
                line: text[..i].matches('\n').count() + 1,
                body,
            });
        }
    }
    out
}

/// The bodies of every `fn name` in the text.
fn fn_bodies(text: &str, name: &str) -> Vec<std::ops::Range<usize>> {
    let t = text.as_bytes();
    let mut out = Vec::new();
    for i in 0..t.len() {
        if word_at(t, i, "fn") {
            let start = skip_ws(t, i + 2);
            let end = ident_end(t, start);
            if &text[start..end] == name {
                let paren = skip_ws(t, end);
                if t.get(paren) == Some(&b'(') {
                    out.extend(body_after_params(t, paren));
                }
            }
        }
    }
    out
}

/// What in `body` (of the cleaned `text`) may panic outside a guard; `aliases` is the text where
/// `type` aliases are defined.
fn check_body(text: &str, body: std::ops::Range<usize>, aliases: &str) -> Vec<String> {
    let t = text.as_bytes();
    let mut b: Vec<u8> = t[body.start + 1..body.end - 1].to_vec();
    // Nested functions are items of their own (an extern one is an entry of its own).
    let mut i = 0;
    while i < b.len() {
        if word_at(&b, i, "fn") {
            let start = skip_ws(&b, i + 2);
            let end = ident_end(&b, start);
            if end > start {
                let paren = skip_ws(&b, end);
                if b.get(paren) == Some(&b'(') {
                    if let Some(r) = body_after_params(&b, paren) {
                        b[i..r.end].iter_mut().for_each(|c| *c = b' ');
                        i = r.end;
                        continue;
                    }
                }
            }
        }
        i += 1;
    }
    // The work a guard runs: its second argument.
    let mut i = 0;
    while i < b.len() {
        if word_at(&b, i, GUARD) {
            let paren = skip_ws(&b, i + GUARD.len());
            if b.get(paren) == Some(&b'(') {
                let close = closing(&b, paren);
                let mut depth = 0;
                let comma = (paren + 1..close).find(|&k| {
                    match b[k] {
                        b'(' | b'[' | b'{' => depth += 1,
                        b')' | b']' | b'}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0 && b[k] == b','
                });
                if let Some(comma) = comma {
                    b[comma + 1..close].iter_mut().for_each(|c| *c = b' ');
                }
                i = close;
            }
        }
        i += 1;
    }
    let outside = String::from_utf8(b).unwrap();
    let whole = &text[body.clone()];
    let mut problems = Vec::new();
    for op in [
        " + ", " - ", " * ", " / ", " % ", "+=", "-=", "*=", "/=", "%=", "<<", ">>",
    ] {
        if outside.contains(op) {
            problems.push(format!("arithmetic `{}` outside a guard", op.trim()));
        }
    }
    if outside.contains('[') {
        problems.push("indexing `[` outside a guard".into());
    }
    let o = outside.as_bytes();
    let mut i = 0;
    while i < o.len() {
        if !is_ident(o[i]) || (i > 0 && is_ident(o[i - 1])) || o[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let method = o[..i].iter().rev().find(|c| !c.is_ascii_whitespace()) == Some(&b'.');
        let start = i;
        let mut last = i;
        let mut k = ident_end(o, i);
        loop {
            if o[k..].starts_with(b"::<") {
                k = closing(o, k + 2) + 1;
            } else if o[k..].starts_with(b"::") && o.get(k + 2).is_some_and(|c| is_ident(*c)) {
                last = k + 2;
                k = ident_end(o, k + 2);
            } else {
                break;
            }
        }
        let path = &outside[start..k];
        let name = &outside[last..ident_end(o, last)];
        let next = skip_ws(o, k);
        i = k;
        if o.get(next) == Some(&b'!')
            && matches!(o.get(skip_ws(o, next + 1)), Some(b'(' | b'[' | b'{'))
        {
            problems.push(format!("macro `{path}!` outside a guard"));
            continue;
        }
        if o.get(next) != Some(&b'(') || KEYWORDS.contains(&name) {
            continue;
        }
        let allowed = path.starts_with("libc::")
            || name == GUARD
            || STD_CALLS.iter().any(|(n, _)| *n == name)
            || (!method && CHECKED_HELPERS.iter().any(|(_, n, _)| *n == name))
            || (!method && !path.contains("::") && c_fn_local(whole, aliases, name));
        if !allowed {
            let kind = if method { "method" } else { "function" };
            problems.push(format!(
                "calls the {kind} `{path}` outside a guard (not known to be panic-free)"
            ));
        }
    }
    problems
}

/// Whether `name` is a local of the body bound to an `extern "C" fn` type, directly or through
/// a `type` alias (in `aliases`).
fn c_fn_local(body: &str, aliases: &str, name: &str) -> bool {
    let is_c_fn = |ty: &str| ty.contains("extern \"C\" fn");
    let alias = |a: &str| {
        let def = format!("type {a} =");
        aliases
            .split(def.as_str())
            .skip(1)
            .any(|rest| is_c_fn(rest.split(';').next().unwrap_or("")))
    };
    for tail in body.split("let ").skip(1) {
        let tail = tail.trim_start();
        let tail = tail.strip_prefix("mut ").unwrap_or(tail);
        let Some(rest) = tail.strip_prefix(name) else {
            continue;
        };
        let Some(ty) = rest.trim_start().strip_prefix(':') else {
            continue;
        };
        let ty = ty.split('=').next().unwrap_or("").trim();
        if is_c_fn(ty) || alias(ty.rsplit("::").next().unwrap_or(ty)) {
            return true;
        }
    }
    false
}
