//! The agent's per-site argument evidence of a function called without `argtypes` (the site
//! records' `arg_types`, `truncated_int_args`, `restype_default`), read for the declare-argtypes
//! advice: which Python types ctypes' guessing was given at each position, which of them are a
//! risk, and the `argtypes` line they suggest.
//!
//! What ctypes makes of each type without `argtypes` (`ConvParam` in `_ctypes`):
//! - a Python int (or bool) becomes a C `int`: right for an `int` parameter; a `double` one reads
//!   garbage, a 64-bit integer or a pointer gets the low 32 bits only. `c_int` is therefore a guess
//!   from the values passed, never a finding: the C prototype decides;
//! - bytes becomes `char *` (`c_char_p`), str `wchar_t *` (`c_wchar_p`), None a NULL pointer;
//! - a ctypes instance passes as itself (a `c_double` as a double, an array as a pointer to its
//!   first element, a structure by value), `byref(x)` as the address of `x`;
//! - a Python float is refused ("Don't know how to convert parameter"): such a call never reaches
//!   C and is not in a profile; were one seen, ctypes would have passed a double.

use std::collections::BTreeMap;

use ffiprof_profile::{FunctionRecord, SiteRecord};
use serde::Serialize;

/// One argument position over every site that recorded it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Position {
    /// The Python types seen there (agent's names: `int`, `bytes`, `ctypes:c_double`, ...).
    pub types: Vec<String>,
    /// The `argtypes` entry they suggest, as Python code (`ctypes.c_int`).
    pub suggested: String,
    /// Whether `suggested` is a guess from the values passed (a Python int, an object passed
    /// through `_as_parameter_`), not the type the program itself passed.
    pub guessed: bool,
    /// A Python int was passed here (ctypes made a 4-byte C `int` of it).
    pub python_int: bool,
    /// A Python int passed here did not fit 32 bits: its high bits were lost.
    pub truncated: bool,
}

/// A site's own evidence, for the advice's evidence list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteArgs {
    pub file: String,
    pub line: u32,
    pub calls: u64,
    /// The calls whose arguments the agent looked at.
    pub arg_types_calls: u64,
    pub arg_types: Vec<String>,
    pub truncated_int_args: Vec<u32>,
    pub restype_default: bool,
}

/// What the sites of one function saw.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionArgs {
    pub positions: Vec<Position>,
    pub sites: Vec<SiteArgs>,
    /// Some site read the result through the default `c_int` restype.
    pub restype_default: bool,
}

impl FunctionArgs {
    pub fn python_ints(&self) -> u32 {
        self.positions.iter().filter(|p| p.python_int).count() as u32
    }

    pub fn truncated(&self) -> Vec<u32> {
        (0..self.positions.len() as u32)
            .filter(|&i| self.positions[i as usize].truncated)
            .collect()
    }

    /// The argument codes the declare-argtypes change is timed with (`i` per Python int, `P` per
    /// other argument, ints first: `measure::guessed_args`'s form), when each position saw one
    /// kind only.
    pub fn codes(&self) -> Option<String> {
        let mut ints = 0;
        for p in &self.positions {
            let int = p.types.iter().filter(|t| is_int(t)).count();
            if int != 0 && int != p.types.len() {
                return None;
            }
            ints += (int != 0) as usize;
        }
        Some("i".repeat(ints) + &"P".repeat(self.positions.len() - ints))
    }
}

fn is_int(t: &str) -> bool {
    t == "int" || t == "bool"
}

/// The evidence of `f`'s sites, None when no site recorded any (a declared function, cffi, or a
/// profile from before the agent recorded it).
pub fn of_function(f: &FunctionRecord) -> Option<FunctionArgs> {
    let recorded: Vec<&SiteRecord> = f.sites.iter().filter(|s| !s.arg_types.is_empty()).collect();
    if recorded.is_empty() {
        return None;
    }
    let arity = recorded
        .iter()
        .map(|s| s.arg_types.len())
        .max()
        .unwrap_or(0);
    let mut seen: Vec<Vec<String>> = vec![Vec::new(); arity];
    let mut truncated = vec![false; arity];
    for s in &recorded {
        for (i, alts) in s.arg_types.iter().enumerate() {
            for t in alts.split('|').filter(|t| !t.is_empty()) {
                if !seen[i].iter().any(|x| x == t) {
                    seen[i].push(t.to_string());
                }
            }
        }
        for &i in &s.truncated_int_args {
            if let Some(t) = truncated.get_mut(i as usize) {
                *t = true;
            }
        }
    }
    let positions = seen
        .into_iter()
        .zip(truncated)
        .map(|(types, truncated)| {
            let (suggested, guessed) = suggest(&types);
            Position {
                python_int: types.iter().any(|t| is_int(t)),
                types,
                suggested,
                guessed,
                truncated,
            }
        })
        .collect();
    let sites = recorded
        .iter()
        .map(|s| SiteArgs {
            file: s.file.clone(),
            line: s.line,
            calls: s.calls,
            arg_types_calls: s.arg_types_calls,
            arg_types: s.arg_types.clone(),
            truncated_int_args: s.truncated_int_args.clone(),
            restype_default: s.restype_default,
        })
        .collect();
    Some(FunctionArgs {
        positions,
        sites,
        restype_default: f.sites.iter().any(|s| s.restype_default),
    })
}

/// The `argtypes` entry for the types seen at one position, and whether it is a guess. None fits
/// any pointer type, so it decides only when nothing else was seen.
fn suggest(types: &[String]) -> (String, bool) {
    let mut kinds: BTreeMap<(String, bool), ()> = BTreeMap::new();
    for t in types.iter().filter(|t| *t != "None") {
        kinds.insert(one_type(t), ());
    }
    let mut kinds: Vec<(String, bool)> = kinds.into_keys().collect();
    match kinds.len() {
        0 => ("ctypes.c_void_p".into(), true),
        1 => kinds.remove(0),
        // Different kinds at one position: nothing to write but the prototype's type.
        _ => ("T".into(), true),
    }
}

/// The `argtypes` entry for one type the agent named, and whether it is a guess.
fn one_type(t: &str) -> (String, bool) {
    match t {
        "int" | "bool" => ("ctypes.c_int".into(), true),
        "float" => ("ctypes.c_double".into(), false),
        "bytes" => ("ctypes.c_char_p".into(), false),
        "str" => ("ctypes.c_wchar_p".into(), false),
        _ => {
            if let Some(name) = t.strip_prefix("ctypes:") {
                (ctypes_type(name, false), false)
            } else if let Some(name) = t.strip_prefix("byref:") {
                (ctypes_type(name, true), false)
            } else {
                // An object passed through its `_as_parameter_`: its type is the program's.
                ("T".into(), true)
            }
        }
    }
}

/// Python code for the parameter type an instance of ctypes type `name` stands for: an array
/// (`c_double_Array_4`) passes as a pointer to its elements, a pointer type (`LP_c_int`) is
/// `POINTER(c_int)`; `byref` of anything is a pointer to it. Names of the program's own types
/// (structures) are written as they are.
fn ctypes_type(name: &str, by_reference: bool) -> String {
    if let Some((element, _)) = name.split_once("_Array_") {
        return format!("ctypes.POINTER({})", qualified(element));
    }
    if by_reference {
        format!("ctypes.POINTER({})", qualified(name))
    } else {
        qualified(name)
    }
}

/// A ctypes type's name as Python code: `ctypes.c_int`, `ctypes.POINTER(...)` for `LP_...`, the
/// program's own names as they are.
fn qualified(n: &str) -> String {
    if n.starts_with("c_") {
        format!("ctypes.{n}")
    } else if let Some(inner) = n.strip_prefix("LP_") {
        format!("ctypes.POINTER({})", qualified(inner))
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site_with(line: u32, types: &[&str], truncated: &[u32], restype: bool) -> SiteRecord {
        SiteRecord {
            file: "app.py".into(),
            line,
            calls: 10,
            arg_types: types.iter().map(|t| t.to_string()).collect(),
            truncated_int_args: truncated.to_vec(),
            restype_default: restype,
            ..SiteRecord::default()
        }
    }

    #[test]
    fn each_type_suggests_its_ctypes_type() {
        let cases = [
            ("int", "ctypes.c_int", true),
            ("bool", "ctypes.c_int", true),
            ("float", "ctypes.c_double", false),
            ("bytes", "ctypes.c_char_p", false),
            ("str", "ctypes.c_wchar_p", false),
            ("None", "ctypes.c_void_p", true),
            ("ctypes:c_double", "ctypes.c_double", false),
            (
                "ctypes:c_double_Array_512",
                "ctypes.POINTER(ctypes.c_double)",
                false,
            ),
            ("ctypes:LP_c_int", "ctypes.POINTER(ctypes.c_int)", false),
            ("ctypes:Point", "Point", false),
            ("byref:c_int", "ctypes.POINTER(ctypes.c_int)", false),
            ("byref:Point", "ctypes.POINTER(Point)", false),
            ("bytes|None", "ctypes.c_char_p", false),
            ("int|bytes", "T", true),
            ("Handle", "T", true),
        ];
        for (types, want, guessed) in cases {
            let f = FunctionRecord {
                sites: vec![site_with(3, &[types], &[], false)],
                ..FunctionRecord::default()
            };
            let p = &of_function(&f).unwrap().positions[0];
            assert_eq!(
                (p.suggested.as_str(), p.guessed),
                (want, guessed),
                "{types}"
            );
        }
    }

    #[test]
    fn sites_are_merged_by_position() {
        let f = FunctionRecord {
            sites: vec![
                site_with(3, &["int", "bytes"], &[], true),
                site_with(9, &["int", "None", "int"], &[0], false),
                site_with(12, &[], &[], true),
            ],
            ..FunctionRecord::default()
        };
        let a = of_function(&f).unwrap();
        let types: Vec<&[String]> = a.positions.iter().map(|p| p.types.as_slice()).collect();
        assert_eq!(types, [&["int"][..], &["bytes", "None"], &["int"]]);
        assert_eq!(a.python_ints(), 2);
        assert_eq!(a.truncated(), [0]);
        assert_eq!(a.sites.len(), 2, "the site without evidence is not listed");
        assert!(a.restype_default);
        assert_eq!(a.codes().as_deref(), Some("iiP"));
        assert_eq!(a.positions[1].suggested, "ctypes.c_char_p");
    }

    #[test]
    fn no_evidence_is_none() {
        let f = FunctionRecord {
            sites: vec![site_with(3, &[], &[], true)],
            ..FunctionRecord::default()
        };
        assert!(of_function(&f).is_none());
    }
}
