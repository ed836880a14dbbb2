//! Reading and writing profiles, with errors precise enough to tell a user what is wrong with a file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::{Profile, FORMAT_NAME, FORMAT_VERSION};

/// Why a profile could not be read or written. Each message names the file.
#[derive(Debug, Error)]
pub enum ProfileError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the file is empty (the traced process may have been killed before its first snapshot)")]
    Empty { path: PathBuf },
    #[error("{path}: the profile is truncated (it ends early: {detail})")]
    Truncated { path: PathBuf, detail: String },
    #[error("{path}: not an ffiprof profile ({detail})")]
    NotAProfile { path: PathBuf, detail: String },
    #[error("{path}: profile version {found} is newer than this ffiprof reads (up to {supported}); upgrade ffiprof to read it")]
    NewerVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}: corrupt profile: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    version: Option<u32>,
}

/// Reads and validates a profile file.
pub fn read_file(path: impl AsRef<Path>) -> Result<Profile, ProfileError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|source| ProfileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| ProfileError::NotAProfile {
        path: path.to_path_buf(),
        detail: "it is not text".into(),
    })?;
    read_str(&text, path)
}

/// Parses a profile from text; `path` only names the source in errors.
pub fn read_str(text: &str, path: impl AsRef<Path>) -> Result<Profile, ProfileError> {
    let path = path.as_ref().to_path_buf();
    if text.trim().is_empty() {
        return Err(ProfileError::Empty { path });
    }
    let header: Header = match serde_json::from_str(text) {
        Ok(h) => h,
        Err(e) if e.is_eof() => {
            return Err(ProfileError::Truncated {
                path,
                detail: e.to_string(),
            })
        }
        Err(e) => {
            return Err(ProfileError::NotAProfile {
                path,
                detail: format!("not JSON: {e}"),
            })
        }
    };
    match header.format.as_deref() {
        Some(FORMAT_NAME) => {}
        Some(other) => {
            return Err(ProfileError::NotAProfile {
                path,
                detail: format!("its format is {other:?}"),
            })
        }
        None => {
            return Err(ProfileError::NotAProfile {
                path,
                detail: format!("no \"format\": \"{FORMAT_NAME}\" field"),
            })
        }
    }
    let found = header.version.ok_or_else(|| ProfileError::Corrupt {
        path: path.clone(),
        detail: "no version field".into(),
    })?;
    if found > FORMAT_VERSION {
        return Err(ProfileError::NewerVersion {
            path,
            found,
            supported: FORMAT_VERSION,
        });
    }
    let mut profile: Profile = serde_json::from_str(text).map_err(|e| ProfileError::Corrupt {
        path,
        detail: e.to_string(),
    })?;
    profile.separate_ctypes_internal();
    Ok(profile)
}

/// Writes `profile` to `path` so that readers see the old file or the new one, never half of one:
/// a private temp file in the same directory (mode 0600, created exclusively), then a rename.
pub fn write_atomic(profile: &Profile, path: impl AsRef<Path>) -> Result<(), ProfileError> {
    write_bytes_atomic(profile.to_json().as_bytes(), path.as_ref())
}

pub(crate) fn write_bytes_atomic(bytes: &[u8], path: &Path) -> Result<(), ProfileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| ProfileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc_o_nofollow())
        .open(&tmp)
        .or_else(|e| {
            // A temp file left by a killed writer of the same pid: replace it.
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                fs::remove_file(&tmp)?;
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc_o_nofollow())
                    .open(&tmp)
            } else {
                Err(e)
            }
        })
        .map_err(err)?;
    let result = file
        .write_all(bytes)
        .and_then(|_| file.flush())
        .and_then(|_| fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

/// O_NOFOLLOW on Linux; spelled out to keep this crate free of a libc dependency.
const fn libc_o_nofollow() -> i32 {
    0o400000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_newer_versions_by_name() {
        let text = format!(
            r#"{{"format":"{FORMAT_NAME}","version":{}}}"#,
            FORMAT_VERSION + 1
        );
        let e = read_str(&text, "p.json").unwrap_err();
        assert!(matches!(e, ProfileError::NewerVersion { .. }), "{e}");
        assert!(e.to_string().contains("p.json"));
        assert!(e.to_string().contains("upgrade"));
    }

    #[test]
    fn classifies_bad_input() {
        assert!(matches!(
            read_str("", "x").unwrap_err(),
            ProfileError::Empty { .. }
        ));
        assert!(matches!(
            read_str("hello", "x").unwrap_err(),
            ProfileError::NotAProfile { .. }
        ));
        assert!(matches!(
            read_str("{\"a\":1}", "x").unwrap_err(),
            ProfileError::NotAProfile { .. }
        ));
        let full = Profile::new().to_json();
        let cut = &full[..full.len() / 2];
        assert!(matches!(
            read_str(cut, "x").unwrap_err(),
            ProfileError::Truncated { .. }
        ));
    }

    #[test]
    fn atomic_write_round_trips_with_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let mut p = Profile::new();
        p.meta.pid = 42;
        write_atomic(&p, &path).unwrap();
        write_atomic(&p, &path).unwrap();
        assert_eq!(read_file(&path).unwrap(), p);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
