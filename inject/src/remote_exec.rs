//! PEP 768 (`sys.remote_exec`, CPython 3.14+): the interpreter's own way to run a script in another
//! process at its next safe point. The target's interpreter does the locking right, so we only
//! hand it a file and ask an interpreter of the same version to deliver it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;

use super::elf::{version_from_name, PythonModule};
use super::error::InjectError;
use super::procfs::Status;
use super::snippet::StatusChannel;

pub const MIN_VERSION: (u32, u32) = (3, 14);

/// Writes `source` into the status directory and has `sys.remote_exec` schedule it in `pid`.
pub fn schedule(
    pid: i32,
    python: &PythonModule,
    exe: &str,
    target: &Status,
    source: &str,
    channel: &StatusChannel,
) -> Result<(), InjectError> {
    if python.version < MIN_VERSION {
        return Err(InjectError::RemoteExecTooOld {
            pid,
            version: python.version_string(),
        });
    }
    let local = channel.local_path().join("script.py");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&local)
        .map_err(|e| InjectError::io(&local, e))?;
    file.write_all(source.as_bytes())
        .map_err(|e| InjectError::io(&local, e))?;
    std::os::unix::fs::chown(&local, Some(target.uid[3]), Some(target.gid[3]))
        .map_err(|e| InjectError::io(&local, e))?;
    let remote = channel.target_path().join("script.py");
    // The delivering interpreter must speak the target's debug-offsets layout: its own executable
    // when that is a Python, else `python3.X` from PATH.
    let interpreter = if version_from_name(exe) == Some(python.version) {
        exe.to_owned()
    } else {
        format!("python{}", python.version_string())
    };
    let out = Command::new(&interpreter)
        .args([
            "-c",
            "import sys; sys.remote_exec(int(sys.argv[1]), sys.argv[2])",
        ])
        .arg(pid.to_string())
        .arg(&remote)
        .output()
        .map_err(|e| InjectError::RemoteExecFailed {
            pid,
            detail: format!("cannot run {interpreter}: {e}"),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or("").trim();
        return Err(InjectError::RemoteExecFailed {
            pid,
            detail: format!(
                "{interpreter} said: {last}; remote debugging may be disabled in the target \
                 (PYTHON_DISABLE_REMOTE_DEBUG, -X disable_remote_debug, --without-remote-debug): use --method ptrace"
            ),
        });
    }
    Ok(())
}
