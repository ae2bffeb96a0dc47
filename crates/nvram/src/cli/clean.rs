//! `nvram clean`: remove the temporary files that killed writers left next to stores.

use super::out::message;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Remove the temporary files that interrupted writes left next to each store.
///
/// A write goes to a new file next to the store that takes the store's name once it is
/// complete. Where the filesystem has O_TMPFILE that file has no name until then, so nothing is
/// left behind; elsewhere (or killed in the instant between naming and renaming) a killed
/// `nvram` leaves `.NAME.nvram-XXXXXXXXXXXXXXXX.tmp` (`.NAME.PID-N.tmp` from older versions),
/// as big as the store. `nvram check` lists them; the next successful edit of the store also
/// removes them.
///
/// Only regular files with such a name are removed, never through a symlink, and only while
/// the store's lock is held (as every edit holds it), so no write of the store can be under
/// way; a temporary file that a writer still holds is left. A store a running VM holds is
/// skipped (see --wait). A store that does not exist (a killed `create`) needs no lock.
///
/// Output: one line per removed file on stdout, `removed PATH (N bytes)`. With --json, one
/// JSON object on stdout instead: {"removed": [{"path", "bytes"}], "in_use": [PATH],
/// "locked": [STORE]}, and nothing on stderr.
///
/// Exit status: 0 every temporary file found was removed (or there were none); 1 a store was
/// locked or a temporary file in use (left alone); 2 an error.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The stores.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut status = ExitCode::SUCCESS;
    let mut report = String::new();
    let (mut removed, mut in_use, mut locked) = (Vec::new(), Vec::new(), Vec::new());
    for file in &args.files {
        let removal = match nvram::files::clean(file) {
            Ok(removal) => removal,
            Err(e @ nvram::files::FileError::Locked { .. }) => {
                if !args.json {
                    message!("nvram: {e}; its temporary files were left");
                }
                locked.push(file.clone());
                status = ExitCode::from(1);
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot clean {}", file.display()));
            }
        };
        for leftover in &removal.removed {
            let _ = writeln!(
                report,
                "removed {} ({} bytes)",
                leftover.path.display(),
                leftover.len
            );
            removed.push(serde_json::json!({"path": leftover.path, "bytes": leftover.len}));
        }
        for leftover in &removal.in_use {
            if !args.json {
                message!(
                    "nvram: {}: being written by a running process; left",
                    leftover.path.display()
                );
            }
            in_use.push(leftover.path.clone());
            status = ExitCode::from(1);
        }
    }
    if args.json {
        let doc = serde_json::json!({"removed": removed, "in_use": in_use, "locked": locked});
        report = nvram::escape::to_json_pretty(&doc)? + "\n";
    }
    super::out::report(&report);
    Ok(status)
}
