//! Where the agent library comes from: the copy embedded in this binary, unpacked once per
//! version into a private per-user cache directory (as samply does), so `ffiprof` needs no file
//! beside it. `FFIPROF_AGENT` points at another build of the agent instead.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

static EMBEDDED: &[u8] = include_bytes!(env!("FFIPROF_EMBEDDED_AGENT"));

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("ffiprof");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache/ffiprof");
    }
    // Fallback: a per-user directory under /tmp, checked for ownership below.
    PathBuf::from(format!("/tmp/ffiprof-{}", current_uid()))
}

fn current_uid() -> u32 {
    ffiprof_inject::launch::current_uid()
}

/// Creates `dir` (mode 0700) if needed and refuses one that another user owns or can write.
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the agent cache directory {}", dir.display()))?;
    let meta = fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() || meta.uid() != current_uid() || meta.mode() & 0o022 != 0 {
        bail!(
            "{} is not a private directory of this user; remove it or set XDG_CACHE_HOME",
            dir.display()
        );
    }
    Ok(())
}

/// Path of an agent library the traced process can load.
pub fn agent_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("FFIPROF_AGENT").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!(
                "FFIPROF_AGENT={} does not name a file; unset it to use the built-in agent",
                p.display()
            );
        }
        return Ok(fs::canonicalize(p)?);
    }
    let dir = cache_root().join(format!(
        "{}-{:016x}",
        env!("CARGO_PKG_VERSION"),
        fnv1a(EMBEDDED)
    ));
    let path = dir.join("libffiprof_agent.so");
    if fs::metadata(&path)
        .map(|m| m.len() == EMBEDDED.len() as u64)
        .unwrap_or(false)
    {
        return Ok(path);
    }
    private_dir(&dir)?;
    let tmp = dir.join(format!(".agent.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .custom_flags(0o400000 /* O_NOFOLLOW */)
        .open(&tmp)
        .with_context(|| format!("cannot write the agent to {}", tmp.display()))?;
    f.write_all(EMBEDDED)?;
    f.sync_all()?;
    drop(f);
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
    fs::rename(&tmp, &path)?;
    Ok(path)
}
