//! What `/proc` says about the target: its mappings, owner, threads and signal masks, and why the
//! kernel may refuse us. Pure parsing is split from reading so the diagnosis can be unit-tested.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::error::{InjectError, PtraceDenial};

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub executable: bool,
    pub offset: u64,
    pub path: String,
}

pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
            let _dev = fields.next()?;
            let _inode = fields.next()?;
            let path = fields.collect::<Vec<_>>().join(" ");
            let (start, end) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                readable: perms.starts_with('r'),
                executable: perms.as_bytes().get(2) == Some(&b'x'),
                offset,
                path,
            })
        })
        .collect()
}

pub fn read_maps(pid: i32) -> Result<Vec<Mapping>, InjectError> {
    let path = format!("/proc/{pid}/maps");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(parse_maps(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(InjectError::NoSuchProcess { pid })
        }
        Err(e) => Err(InjectError::io(path, e)),
    }
}

/// The fields of `/proc/PID/status` (or `/proc/PID/task/TID/status`) that injection cares about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Real, effective, saved, filesystem.
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub groups: Vec<u32>,
    pub tracer_pid: i32,
    /// First letter of `State:` (`R`, `S`, `D`, `Z`, `T`, `t`, `X`).
    pub state: char,
    pub sig_blocked: u64,
    pub sig_ignored: u64,
    pub cap_effective: u64,
    pub cap_bounding: u64,
}

pub fn parse_status(text: &str) -> Status {
    fn ids<const N: usize>(v: &str) -> [u32; N] {
        let mut out = [0; N];
        for (slot, field) in out.iter_mut().zip(v.split_ascii_whitespace()) {
            *slot = field.parse().unwrap_or(0);
        }
        out
    }
    let hex = |v: &str| u64::from_str_radix(v.trim(), 16).unwrap_or(0);
    let mut st = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Uid" => st.uid = ids(value),
            "Gid" => st.gid = ids(value),
            "Groups" => {
                st.groups = value
                    .split_ascii_whitespace()
                    .filter_map(|g| g.parse().ok())
                    .collect()
            }
            "TracerPid" => st.tracer_pid = value.parse().unwrap_or(0),
            "State" => st.state = value.chars().next().unwrap_or('?'),
            "SigBlk" => st.sig_blocked = hex(value),
            "SigIgn" => st.sig_ignored = hex(value),
            "CapEff" => st.cap_effective = hex(value),
            "CapBnd" => st.cap_bounding = hex(value),
            _ => {}
        }
    }
    st
}

pub fn read_status(path: &str, pid: i32) -> Result<Status, InjectError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(parse_status(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(InjectError::NoSuchProcess { pid })
        }
        Err(e) => Err(InjectError::io(path, e)),
    }
}

pub fn process_status(pid: i32) -> Result<Status, InjectError> {
    read_status(&format!("/proc/{pid}/status"), pid)
}

/// Whether the process is gone or a zombie: either way it will never run our pending call.
pub fn is_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => text
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_none_or(|state| state == 'Z' || state == 'X'),
        Err(_) => true,
    }
}

/// The target's threads with their scheduler state, main thread first.
pub fn threads(pid: i32) -> Result<Vec<(i32, char)>, InjectError> {
    let dir = format!("/proc/{pid}/task");
    let entries = fs::read_dir(&dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => InjectError::NoSuchProcess { pid },
        _ => InjectError::io(&dir, e),
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let state = fs::read_to_string(format!("{dir}/{tid}/stat"))
            .ok()
            .and_then(|t| {
                t.rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next())
            })
            .unwrap_or('?');
        out.push((tid, state));
    }
    out.sort_by_key(|&(tid, _)| (tid != pid, tid));
    Ok(out)
}

pub const CAP_SYS_PTRACE: u32 = 19;

/// Facts that decide whether ptrace is allowed, gathered so [`diagnose_denial`] stays pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtraceFacts {
    pub our_uid: u32,
    pub our_caps: u64,
    pub our_cap_bounding: u64,
    pub target: Status,
    /// `None` when Yama is not built into the kernel.
    pub yama_scope: Option<u8>,
    pub in_container: bool,
}

pub fn gather_facts(pid: i32) -> Result<PtraceFacts, InjectError> {
    let ours = process_status(std::process::id() as i32)?;
    let target = process_status(pid)?;
    let yama_scope = fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    Ok(PtraceFacts {
        // SAFETY: geteuid has no preconditions and cannot fail.
        our_uid: unsafe { libc::geteuid() },
        our_caps: ours.cap_effective,
        our_cap_bounding: ours.cap_bounding,
        target,
        yama_scope,
        in_container: in_container(),
    })
}

fn in_container() -> bool {
    Path::new("/.dockerenv").exists()
        || Path::new("/run/.containerenv").exists()
        || std::env::var_os("container").is_some()
        || fs::read_to_string("/proc/1/cgroup")
            .map(|c| {
                ["docker", "kubepods", "containerd", "libpod", "lxc"]
                    .iter()
                    .any(|k| c.contains(k))
            })
            .unwrap_or(false)
}

/// Why an attach was (or would be) refused, checked in the kernel's own order.
pub fn diagnose_denial(f: &PtraceFacts) -> PtraceDenial {
    let has_cap = f.our_caps & (1 << CAP_SYS_PTRACE) != 0;
    if f.target.tracer_pid != 0 {
        return PtraceDenial::AlreadyTraced {
            tracer_pid: f.target.tracer_pid,
        };
    }
    let same_user = f.target.uid.iter().all(|&u| u == f.our_uid);
    if !same_user && !has_cap {
        if f.in_container && f.our_cap_bounding & (1 << CAP_SYS_PTRACE) == 0 {
            return PtraceDenial::Container;
        }
        return PtraceDenial::OtherUser {
            target_uid: f.target.uid[1],
            our_uid: f.our_uid,
        };
    }
    match f.yama_scope {
        Some(3) => return PtraceDenial::Yama { scope: 3 },
        Some(scope @ (1 | 2)) if !has_cap => return PtraceDenial::Yama { scope },
        _ => {}
    }
    if f.in_container && !has_cap {
        return PtraceDenial::Container;
    }
    PtraceDenial::Unexplained
}

/// Checks that a process with the target's credentials could open `path` for reading, walking
/// every directory on the way (the loader in the target opens it with the target's rights, not ours).
pub fn check_readable_by(path: &Path, target: &Status) -> Result<(), String> {
    let uid = target.uid[3];
    let mut gids: Vec<u32> = target.groups.clone();
    gids.push(target.gid[3]);
    if uid == 0 {
        return fs::metadata(path).map(|_| ()).map_err(|e| e.to_string());
    }
    let allowed = |meta: &fs::Metadata, bit: u32| {
        let mode = meta.mode();
        if meta.uid() == uid {
            mode & (bit << 6) != 0
        } else if gids.contains(&meta.gid()) {
            mode & (bit << 3) != 0
        } else {
            mode & bit != 0
        }
    };
    let mut dir = PathBuf::from("/");
    for component in path.parent().unwrap_or(Path::new("/")).components().skip(1) {
        dir.push(component);
        let meta = fs::metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !allowed(&meta, 0o1) {
            return Err(format!(
                "directory {} is not searchable by uid {uid}",
                dir.display()
            ));
        }
    }
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    if !allowed(&meta, 0o4) {
        return Err(format!(
            "mode {:o} owned by uid {} does not let uid {uid} read it",
            meta.mode() & 0o7777,
            meta.uid()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let maps = parse_maps(
            "00400000-00420000 r-xp 00001000 08:01 123 /usr/bin/python3.11\n\
             7ffd0000-7ffd1000 rw-p 00000000 00:00 0 \n\
             7f00-7f10 r--p 00000000 08:01 9 /tmp/with space.so\n",
        );
        assert_eq!(maps.len(), 3);
        assert!(maps[0].executable && maps[0].readable);
        assert_eq!(maps[0].offset, 0x1000);
        assert_eq!(maps[1].path, "");
        assert_eq!(maps[2].path, "/tmp/with space.so");
    }

    #[test]
    fn parses_status() {
        let st = parse_status(
            "State:\tS (sleeping)\nTracerPid:\t42\nUid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\n\
             Groups:\t4 27 \nSigBlk:\t0000000000000800\nSigIgn:\t0000000001001000\nCapEff:\t0000000000080000\n",
        );
        assert_eq!(st.state, 'S');
        assert_eq!(st.tracer_pid, 42);
        assert_eq!(st.uid, [1000; 4]);
        assert_eq!(st.groups, vec![4, 27]);
        assert_eq!(st.sig_blocked, 0x800);
        assert_eq!(st.cap_effective, 1 << CAP_SYS_PTRACE);
    }

    fn facts(
        our_uid: u32,
        caps: u64,
        target_uid: u32,
        yama: Option<u8>,
        container: bool,
    ) -> PtraceFacts {
        PtraceFacts {
            our_uid,
            our_caps: caps,
            our_cap_bounding: caps,
            target: Status {
                uid: [target_uid; 4],
                ..Status::default()
            },
            yama_scope: yama,
            in_container: container,
        }
    }

    #[test]
    fn diagnoses_each_denial() {
        let cap = 1 << CAP_SYS_PTRACE;
        assert_eq!(
            diagnose_denial(&facts(1000, 0, 0, None, false)),
            PtraceDenial::OtherUser {
                target_uid: 0,
                our_uid: 1000
            }
        );
        assert_eq!(
            diagnose_denial(&facts(1000, 0, 1000, Some(1), false)),
            PtraceDenial::Yama { scope: 1 }
        );
        assert_eq!(
            diagnose_denial(&facts(0, cap, 1000, Some(1), false)),
            PtraceDenial::Unexplained
        );
        assert_eq!(
            diagnose_denial(&facts(0, cap, 1000, Some(3), false)),
            PtraceDenial::Yama { scope: 3 }
        );
        assert_eq!(
            diagnose_denial(&facts(0, 0, 0, None, true)),
            PtraceDenial::Container
        );
        assert_eq!(
            diagnose_denial(&facts(1000, 0, 0, None, true)),
            PtraceDenial::Container
        );
        let mut traced = facts(0, cap, 0, None, false);
        traced.target.tracer_pid = 7;
        assert_eq!(
            diagnose_denial(&traced),
            PtraceDenial::AlreadyTraced { tracer_pid: 7 }
        );
        for d in [
            PtraceDenial::Yama { scope: 1 },
            PtraceDenial::Container,
            PtraceDenial::Unexplained,
        ] {
            assert!(!d.to_string().is_empty());
        }
    }

    #[test]
    fn readability_follows_modes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.so");
        fs::write(&file, b"x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let nobody = Status {
            uid: [65534; 4],
            gid: [65534; 4],
            ..Status::default()
        };
        let owner = fs::metadata(&file).unwrap().uid();
        let me = Status {
            uid: [owner; 4],
            gid: [owner; 4],
            ..Status::default()
        };
        assert!(check_readable_by(&file, &me).is_ok());
        if owner != 65534 {
            let err = check_readable_by(&file, &nobody).unwrap_err();
            assert!(err.contains("not searchable"), "{err}");
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
            fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
            assert!(check_readable_by(&file, &nobody)
                .unwrap_err()
                .contains("does not let"));
        }
    }
}
