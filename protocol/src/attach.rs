//! The files of an attach session. The CLI writes the agent's configuration ([`AttachConfig`],
//! one `key=value` per line) and the agent answers in `status` ([`AgentStatus`], one line
//! `STATE key=value ... [-- text]`), in a directory the CLI created for the session (0700, owned
//! by the target's user). Both sides parse what they read leniently: a newer CLI may send keys an
//! older agent does not know, and they are ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the CLI tells the agent, one `key=value` per line (paths may not contain newlines).
#[derive(Debug, Clone, PartialEq)]
pub struct AttachConfig {
    /// The session directory as the target sees it.
    pub session: PathBuf,
    /// Stop by itself after this long (None: until asked).
    pub duration: Option<Duration>,
    /// Detach when this process (the CLI) is gone.
    pub cli_pid: Option<u32>,
    pub libs: Vec<String>,
    pub interval: Duration,
    /// Time one call in N; 0 = the agent's default (as in `run`: every call with the ffi_call
    /// layer alone, a sample with the Python layer).
    pub timing_sample_every: u32,
    /// `--site-skip` patterns (one line each; a pattern holds no newline).
    pub site_skip: Vec<String>,
}

impl AttachConfig {
    pub fn render(&self) -> String {
        let mut s = format!(
            "session={}\ninterval={}\ntiming={}\n",
            self.session.display(),
            self.interval.as_secs_f64(),
            self.timing_sample_every
        );
        if let Some(d) = self.duration {
            s += &format!("duration={}\n", d.as_secs_f64());
        }
        if let Some(p) = self.cli_pid {
            s += &format!("cli_pid={p}\n");
        }
        for lib in &self.libs {
            s += &format!("lib={lib}\n");
        }
        for pattern in &self.site_skip {
            s += &format!("site_skip={pattern}\n");
        }
        s
    }

    pub fn parse(text: &str) -> Result<AttachConfig, String> {
        let mut cfg = AttachConfig {
            session: PathBuf::new(),
            duration: None,
            cli_pid: None,
            libs: Vec::new(),
            interval: Duration::from_secs(1),
            timing_sample_every: 0,
            site_skip: Vec::new(),
        };
        let secs = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(Duration::from_secs_f64)
        };
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("bad config line {line:?}"))?;
            match key {
                "session" => cfg.session = PathBuf::from(value),
                "duration" => cfg.duration = secs(value),
                "cli_pid" => cfg.cli_pid = value.parse().ok(),
                "lib" => cfg.libs.push(value.to_owned()),
                "site_skip" => cfg.site_skip.push(value.to_owned()),
                "interval" => cfg.interval = secs(value).unwrap_or(cfg.interval),
                "timing" => cfg.timing_sample_every = value.parse().unwrap_or(0),
                _ => {} // newer CLI, older agent: ignore what we do not know
            }
        }
        if !cfg.session.is_absolute() {
            return Err("the config names no absolute session directory".into());
        }
        Ok(cfg)
    }
}

/// One report from the agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentStatus {
    /// `started`, `recording`, `written` (the final profile is written; the type slots are
    /// restored next, when the GIL can be had), `detached` or `error`.
    pub state: String,
    pub elapsed_ms: u64,
    pub calls: u64,
    /// Wall-clock time of the first call seen (0: none yet), for attach latency.
    pub first_call_unix_ns: u64,
    /// Hooks restored at detach.
    pub restored: u64,
    /// The profile written at detach, or the error.
    pub detail: String,
}

impl AgentStatus {
    pub fn render(&self) -> String {
        format!(
            "{} elapsed_ms={} calls={} first_call_unix_ns={} restored={} -- {}\n",
            self.state,
            self.elapsed_ms,
            self.calls,
            self.first_call_unix_ns,
            self.restored,
            self.detail
        )
    }

    pub fn parse(text: &str) -> Option<AgentStatus> {
        let (head, detail) = text.split_once(" -- ").unwrap_or((text, ""));
        let mut words = head.split_whitespace();
        let mut st = AgentStatus {
            state: words.next()?.to_owned(),
            detail: detail.trim_end().to_owned(),
            ..Default::default()
        };
        for word in words {
            let Some((k, v)) = word.split_once('=') else {
                continue;
            };
            let v: u64 = v.parse().unwrap_or(0);
            match k {
                "elapsed_ms" => st.elapsed_ms = v,
                "calls" => st.calls = v,
                "first_call_unix_ns" => st.first_call_unix_ns = v,
                "restored" => st.restored = v,
                _ => {}
            }
        }
        Some(st)
    }

    /// Reads `status` in a session directory (None: not written yet).
    pub fn read(session: &Path) -> Option<AgentStatus> {
        std::fs::read_to_string(session.join("status"))
            .ok()
            .and_then(|t| AgentStatus::parse(&t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips() {
        let cfg = AttachConfig {
            session: "/tmp/s".into(),
            duration: Some(Duration::from_millis(2500)),
            cli_pid: Some(42),
            libs: vec!["libm".into(), "*fixture*".into()],
            interval: Duration::from_secs(1),
            timing_sample_every: 4,
            site_skip: vec!["*/ffi.py".into(), "*/app.py:add".into()],
        };
        assert_eq!(AttachConfig::parse(&cfg.render()).unwrap(), cfg);
        assert!(AttachConfig::parse("session=relative\n").is_err());
    }

    #[test]
    fn status_round_trips() {
        let st = AgentStatus {
            state: "detached".into(),
            elapsed_ms: 5,
            calls: 9,
            first_call_unix_ns: 7,
            restored: 3,
            detail: "/x/p.json".into(),
        };
        assert_eq!(AgentStatus::parse(&st.render()).unwrap(), st);
        assert_eq!(AgentStatus::parse("started").unwrap().state, "started");
    }
}
