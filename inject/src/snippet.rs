//! The Python side of an injection: the source the interpreter runs at its safe point, and the
//! private status file through which that source says whether it worked.
//!
//! The source is built so that running it leaves no trace in the program: it runs in a fresh
//! namespace (`PyRun_SimpleString` would otherwise bind names in `__main__`), unmaps the page it
//! was copied into, and never lets an exception escape — a pending call that fails makes the
//! interpreter raise `SystemError` in whatever code the main thread was running.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::error::InjectError;
use super::procfs;

/// What to run inside the target.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Load the shared library at `path` (with the target's rights) and call its exported
    /// `int function(const char *argument)`. A non-zero return is reported as a failure.
    Library {
        path: PathBuf,
        function: String,
        argument: String,
    },
    /// Run Python source in a fresh namespace. It may set `result` to an integer (0 = success).
    Python(String),
}

/// A Python string literal for any text, escaping everything that is not plain printable ASCII.
pub fn py_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if (' '..='~').contains(&c) && c != '\\' && c != '\'' {
            out.push(c);
        } else {
            out.push_str(&format!("\\U{:08x}", c as u32));
        }
    }
    out.push('\'');
    out
}

fn indent(code: &str) -> String {
    code.lines().map(|l| format!("    {l}\n")).collect()
}

fn payload_code(payload: &Payload) -> String {
    match payload {
        Payload::Python(src) => src.clone(),
        Payload::Library {
            path,
            function,
            argument,
        } => format!(
            "import ctypes\n\
             _fn = ctypes.CDLL({path})[{function}]\n\
             _fn.argtypes = (ctypes.c_char_p,)\n\
             _fn.restype = ctypes.c_int\n\
             result = _fn({argument}.encode())\n\
             if result != 0:\n    raise RuntimeError('%s returned %d' % ({function}, result))\n",
            path = py_str(&path.to_string_lossy()),
            function = py_str(function),
            argument = py_str(argument),
        ),
    }
}

/// The complete source handed to the interpreter. `page` is the `(address, length)` of the
/// mapping the source was copied into, which it unmaps first (the interpreter has compiled it by
/// then and never reads it again).
pub fn wrap(payload: &Payload, status_dir: &Path, page: Option<(u64, usize)>) -> String {
    let (page_addr, page_len) = page.unwrap_or((0, 0));
    let inner = format!(
        "import os\n\
         def _report(text):\n\
         \x20   tmp = os.path.join(_dir, 'status.tmp')\n\
         \x20   fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)\n\
         \x20   try:\n\
         \x20       os.write(fd, text.encode('utf-8', 'replace'))\n\
         \x20   finally:\n\
         \x20       os.close(fd)\n\
         \x20   os.rename(tmp, os.path.join(_dir, 'status'))\n\
         if _page:\n\
         \x20   try:\n\
         \x20       import ctypes\n\
         \x20       _munmap = ctypes.CDLL(None).munmap\n\
         \x20       _munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)\n\
         \x20       _munmap(_page, _page_len)\n\
         \x20   except Exception:\n\
         \x20       pass\n\
         try:\n\
         \x20   result = 0\n\
         {body}\
         \x20   _report('ok %d' % int(result))\n\
         except KeyboardInterrupt:\n\
         \x20   _report('error KeyboardInterrupt arrived while the injected code ran; it was passed on to the program')\n\
         \x20   import _thread\n\
         \x20   _thread.interrupt_main()\n\
         except BaseException as e:\n\
         \x20   import traceback\n\
         \x20   _report('error ' + ''.join(traceback.format_exception_only(type(e), e)).strip())\n",
        body = indent(&payload_code(payload)),
    );
    format!(
        "try:\n\
         \x20   __import__('builtins').exec({inner}, {{'__name__': '__ffiprof_inject__', '_dir': {dir}, '_page': {page_addr}, '_page_len': {page_len}}})\n\
         except BaseException:\n\
         \x20   pass\n",
        inner = py_str(&inner),
        dir = py_str(&status_dir.to_string_lossy()),
    )
}

/// What the injected code reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The payload's `result` (the library function's return value).
    pub result: i64,
    /// From scheduling the code to seeing its report.
    pub ran_after: Duration,
}

/// A private directory (0700, owned by the target's user) where the injected code reports.
pub struct StatusChannel {
    /// Where we see it.
    here: PathBuf,
    /// Where the target sees it (differs when the target has another root, e.g. a container).
    there: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl StatusChannel {
    pub fn create(pid: i32, target: &procfs::Status) -> Result<Self, InjectError> {
        let same_root = match (
            fs::metadata("/"),
            fs::metadata(format!("/proc/{pid}/root/")),
        ) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => true,
        };
        let prefix = if same_root {
            String::new()
        } else {
            format!("/proc/{pid}/root")
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "ffiprof-inject-{}-{pid}-{}-{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let there = PathBuf::from("/tmp").join(name);
        let here = PathBuf::from(format!("{prefix}{}", there.display()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&here)
            .map_err(|e| InjectError::io(&here, e))?;
        let channel = StatusChannel { here, there };
        let (uid, gid) = (target.uid[3], target.gid[3]);
        let meta = fs::metadata(&channel.here).map_err(|e| InjectError::io(&channel.here, e))?;
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::chown(&channel.here, Some(uid), Some(gid))
                .map_err(|e| InjectError::io(&channel.here, e))?;
        }
        Ok(channel)
    }

    /// The directory as the target names it.
    pub fn target_path(&self) -> &Path {
        &self.there
    }

    /// The directory as we name it.
    pub fn local_path(&self) -> &Path {
        &self.here
    }

    /// Waits for the injected code's report.
    pub fn wait(
        &self,
        pid: i32,
        scheduled: Instant,
        timeout: Duration,
    ) -> Result<Outcome, InjectError> {
        let status = self.here.join("status");
        let deadline = scheduled + timeout;
        let mut nap = Duration::from_micros(200);
        loop {
            if let Ok(text) = fs::read_to_string(&status) {
                let ran_after = scheduled.elapsed();
                let text = text.trim();
                if let Some(code) = text.strip_prefix("ok ") {
                    return Ok(Outcome {
                        result: code.trim().parse().unwrap_or(0),
                        ran_after,
                    });
                }
                let message = text.strip_prefix("error ").unwrap_or(text).to_owned();
                return Err(InjectError::PayloadFailed { pid, message });
            }
            if procfs::is_gone(pid) {
                return Err(InjectError::TargetExited {
                    pid,
                    during: "before its main thread ran the injected code (nothing was loaded)",
                });
            }
            if Instant::now() >= deadline {
                return Err(InjectError::Timeout {
                    pid,
                    what: "waiting for the main thread to run the injected code",
                    after: timeout,
                    consequence: "the main thread has not executed Python since (blocked in a C call, \
                                  a sleep or a read?); the code stays queued and runs when it next does",
                });
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(5));
        }
    }
}

impl Drop for StatusChannel {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.here);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn py_str_escapes_everything_odd() {
        assert_eq!(py_str("a'b\\c"), "'a\\U00000027b\\U0000005cc'");
        assert_eq!(py_str("é\n"), "'\\U000000e9\\U0000000a'");
    }

    /// Runs the wrapped source in a real interpreter, as the target would, and checks that it
    /// reports, leaves `__main__` clean and never raises.
    #[test]
    fn wrapped_source_reports_and_leaves_main_clean() {
        let Some(python) = ["python3", "/usr/bin/python3"]
            .iter()
            .find(|p| std::process::Command::new(p).arg("-V").output().is_ok())
        else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        for (payload, expect) in [
            (Payload::Python("result = 7".into()), "ok 7"),
            (
                Payload::Python("raise ValueError('boom')".into()),
                "error ValueError: boom",
            ),
            (
                Payload::Library {
                    path: "/nonexistent/lib.so".into(),
                    function: "f".into(),
                    argument: "x".into(),
                },
                "error OSError",
            ),
        ] {
            let _ = fs::remove_file(dir.path().join("status"));
            let src = wrap(&payload, dir.path(), None);
            let check = format!("{src}\nimport sys\nsys.stdout.write(repr(sorted(k for k in globals() if not k.startswith('__') and k != 'sys')))\n");
            let out = std::process::Command::new(python)
                .arg("-c")
                .arg(&check)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout), "[]");
            let status = fs::read_to_string(dir.path().join("status")).unwrap();
            assert!(status.starts_with(expect), "{status}");
        }
    }
}
