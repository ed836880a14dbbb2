//! The functions a profiled library exports, read from its ELF dynamic symbol table.
//!
//! The profile lists only functions that were called; a bulk sibling (`fx_scale_many`) or a release
//! function (`fx_handle_destroy`) the program never called is found only in the library itself.
//! A profile is often read on the machine that recorded it, where its libraries still exist; when a
//! library cannot be read (moved, another machine), the advice simply knows less about it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ffiprof_profile::Profile;
use object::{Object, ObjectSymbol, SymbolKind};

use crate::advice::AdviceOptions;

#[derive(Debug, thiserror::Error)]
pub enum ExportsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an object file ffiprof can read: {source}")]
    Parse {
        path: PathBuf,
        source: object::Error,
    },
}

/// Names of the functions `path` defines and exports (dynamic symbols, global or weak), sorted.
pub fn exported_functions(path: &Path) -> Result<Vec<String>, ExportsError> {
    let data = std::fs::read(path).map_err(|source| ExportsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file = object::File::parse(&*data).map_err(|source| ExportsError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let mut names: Vec<String> = file
        .dynamic_symbols()
        .filter(|s| {
            s.is_definition() && s.kind() == SymbolKind::Text && (s.is_global() || s.is_weak())
        })
        .filter_map(|s| s.name().ok().filter(|n| !n.is_empty()).map(str::to_string))
        .collect();
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

/// The exports of every library in the profile that can be read here, by library path; the others
/// are listed with the reason they could not be read.
pub fn exports_of_profile(profile: &Profile) -> (BTreeMap<String, Vec<String>>, Vec<ExportsError>) {
    let mut found = BTreeMap::new();
    let mut errors = Vec::new();
    for f in &profile.functions {
        if found.contains_key(&f.library) || !f.library.starts_with('/') {
            continue;
        }
        match exported_functions(Path::new(&f.library)) {
            Ok(names) => {
                found.insert(f.library.clone(), names);
            }
            Err(e) => {
                if !errors
                    .iter()
                    .any(|old: &ExportsError| old.to_string() == e.to_string())
                {
                    errors.push(e);
                }
            }
        }
    }
    (found, errors)
}

impl AdviceOptions {
    /// These options with the exports of every profiled library that can be read on this machine
    /// (libraries already listed are kept as given; unreadable ones are skipped).
    pub fn with_exports_from_disk(mut self, profile: &Profile) -> Self {
        let (found, _) = exports_of_profile(profile);
        for (library, names) in found {
            self.exported_symbols.entry(library).or_insert(names);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffiprof_profile::FunctionRecord;

    #[test]
    fn reads_the_fixture_library_exports() {
        let names = exported_functions(Path::new(ffiprof_fixture::LIBRARY)).unwrap();
        for f in [
            "fx_scale",
            "fx_sum",
            "fx_handle_create",
            "fx_handle_destroy",
        ] {
            assert!(names.iter().any(|n| n == f), "{f} missing from {names:?}");
        }
        assert!(
            !names.iter().any(|n| n == "now_ns"),
            "static functions are not exported"
        );
        assert!(
            !names.iter().any(|n| n == "malloc"),
            "imports are not exports"
        );
    }

    #[test]
    fn unreadable_libraries_are_skipped() {
        let mut p = Profile::new();
        p.functions
            .push(FunctionRecord::new(ffiprof_fixture::LIBRARY, "fx_scale"));
        p.functions
            .push(FunctionRecord::new("/nonexistent/libgone.so", "f"));
        p.functions.push(FunctionRecord::new("[unknown]", "g"));
        let (found, errors) = exports_of_profile(&p);
        assert_eq!(found.len(), 1);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("libgone.so"));
        let o = AdviceOptions::default().with_exports_from_disk(&p);
        assert!(o.exports_of(ffiprof_fixture::LIBRARY).is_some());
    }

    #[test]
    fn leak_of_never_released_handles_is_found_through_exports() {
        let mut p = Profile::new();
        p.meta.complete = true;
        let mut f = FunctionRecord::new(ffiprof_fixture::LIBRARY, "fx_handle_create");
        f.calls = 100;
        p.functions.push(f);
        let o = AdviceOptions::default().with_exports_from_disk(&p);
        let recs = crate::recommend(&p, &o);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].evidence["release_function"], "fx_handle_destroy");
    }
}
