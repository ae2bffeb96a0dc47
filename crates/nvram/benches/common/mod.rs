//! Pieces shared by the benchmarks.

pub mod rollout;

use std::process::{Command, Stdio};

/// The number in environment variable `name`, or `default` when it is unset or not a number.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `command` with no input and its output captured; panics with its stderr unless it
/// succeeds.
pub fn run(command: &mut Command) -> std::process::Output {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
