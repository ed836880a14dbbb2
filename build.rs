//! Builds the agent (the `ffiprof-agent` cdylib) in release mode into OUT_DIR, so the CLI can
//! embed it and unpack it at run time: `ffiprof` then works from the build tree and after
//! `cargo install` alike, with no file to keep beside the binary. The agent is always optimised,
//! even in a debug build of the CLI, because it runs inside the profiled program.
//!
//! A separate target directory keeps the nested cargo from waiting on the outer one's lock.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for p in [
        "agent/src",
        "agent/Cargo.toml",
        "protocol/src",
        "protocol/Cargo.toml",
        "profile/src",
        "profile/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=FFIPROF_SKIP_AGENT_BUILD");
    let agent_target = out.join("agent-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--lib",
            "-p",
            "ffiprof-agent",
            "--target-dir",
        ])
        .arg(&agent_target);
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    // The embedded copy needs no debug info: it keeps the `ffiprof` binary small.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    let status = cmd.status().expect("run cargo to build the agent");
    assert!(
        status.success(),
        "building the ffiprof agent (agent/) failed"
    );
    let built = agent_target.join("release/libffiprof_agent.so");
    let dest = out.join("libffiprof_agent.so");
    std::fs::copy(&built, &dest).expect("copy the agent into OUT_DIR");
    println!("cargo:rustc-env=FFIPROF_EMBEDDED_AGENT={}", dest.display());
}
