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
    #[error(
        "{path} (the profile's relative library path, resolved against the current directory) does not \
         export {missing}, which the profile saw in it: not the profiled library"
    )]
    NotTheLibrary { path: PathBuf, missing: String },
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
///
/// A library path is what the loader recorded, which for `CDLL("build/libx.so")` is the relative path
/// as the program gave it: such a path is resolved against the current directory (where `ffiprof run`
/// started the program), and the file found is used only if it exports every function the profile saw
/// in that library. Names without a directory (the loader searched for them) are not looked up.
pub fn exports_of_profile(profile: &Profile) -> (BTreeMap<String, Vec<String>>, Vec<ExportsError>) {
    let cwd = std::env::current_dir().ok();
    exports_of_profile_from(profile, cwd.as_deref())
}

fn exports_of_profile_from(
    profile: &Profile,
    cwd: Option<&Path>,
) -> (BTreeMap<String, Vec<String>>, Vec<ExportsError>) {
    let mut found = BTreeMap::new();
    let mut errors = Vec::new();
    for f in &profile.functions {
        if found.contains_key(&f.library) {
            continue;
        }
        let path = if f.library.starts_with('/') {
            PathBuf::from(&f.library)
        } else if f.library.contains('/') && !f.library.starts_with('[') {
            match cwd {
                Some(dir) => dir.join(&f.library),
                None => continue,
            }
        } else {
            continue;
        };
        let result = exported_functions(&path).and_then(|names| {
            if f.library.starts_with('/') {
                return Ok(names);
            }
            let missing: Vec<&str> = profile
                .functions
                .iter()
                .filter(|g| g.library == f.library && !g.function.starts_with("0x"))
                .map(|g| g.function.as_str())
                .filter(|name| names.binary_search_by(|n| n.as_str().cmp(name)).is_err())
                .collect();
            if missing.is_empty() {
                Ok(names)
            } else {
                Err(ExportsError::NotTheLibrary {
                    path: path.clone(),
                    missing: missing.join(", "),
                })
            }
        });
        match result {
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
    fn relative_library_paths_are_resolved_against_the_current_directory() {
        // `CDLL("dir/libffifixture.so")` run from dir's parent: the profile has the relative path.
        let lib = Path::new(ffiprof_fixture::LIBRARY);
        let dir = lib.parent().unwrap();
        let relative = Path::new(dir.file_name().unwrap()).join(lib.file_name().unwrap());
        let relative = relative.to_str().unwrap().to_string();
        let mut p = Profile::new();
        p.functions
            .push(FunctionRecord::new(relative.as_str(), "fx_scale"));
        let (found, errors) = exports_of_profile_from(&p, dir.parent());
        assert!(errors.is_empty(), "{errors:?}");
        assert!(found[&relative].iter().any(|n| n == "fx_sum"));
        // Another directory has no such file: skipped with the reason.
        let (found, errors) = exports_of_profile_from(&p, Some(Path::new("/nonexistent")));
        assert!(found.is_empty());
        assert_eq!(errors.len(), 1);
        // A file at that path that lacks the profiled functions is some other library.
        p.functions
            .push(FunctionRecord::new(relative.as_str(), "not_in_the_fixture"));
        let (found, errors) = exports_of_profile_from(&p, dir.parent());
        assert!(found.is_empty());
        assert!(
            errors[0].to_string().contains("not_in_the_fixture"),
            "{}",
            errors[0]
        );
        // Bare names (found by the loader's search) and placeholders are not looked up.
        let mut p = Profile::new();
        p.functions.push(FunctionRecord::new("libm.so.6", "cos"));
        p.functions.push(FunctionRecord::new("[unknown]", "g"));
        let (found, errors) = exports_of_profile_from(&p, dir.parent());
        assert!(found.is_empty() && errors.is_empty());
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
