//! Where the command's output goes, without ever panicking (`println!` and `eprintln!` panic
//! when they cannot write, which turned `nvram set … 2>&1 | true` into exit status 101 after
//! the store was written).
//!
//! - stdout closed by its reader (EPIPE: `nvram list vm.fd | head -1`, a consumer that went
//!   away) is not an error: the rest of the output is dropped quietly, the command does the
//!   rest of its work (an edit is finished, an `apply` edits every file) and exits with the
//!   status it would have had with the output read.
//! - Any other failure to write stdout (`> /dev/full`, EIO) is an error (exit 2) for a
//!   command whose output is its result (`list`, `get`, `export`, `check`, …). For a command
//!   that changed a file ([`report`]), it is only said on stderr: the change was made and the
//!   status stays that of the change.
//! - A message on stderr that cannot be written (closed or full stderr) is dropped; it never
//!   changes the status.
//!
//! Human text goes through [`nvram::escape::terminal`] line by line on its way out, as a
//! safety net behind the escaping of each field: no control character or invisible
//! formatting from a store, an input file or a path reaches the terminal raw.

use anyhow::{Context, Result};
use nvram::escape::terminal;
use std::borrow::Cow;
use std::fmt::Display;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout's reader has gone away; later output is dropped.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `bytes` to stdout as they are (JSON, `get --raw`). A closed stdout is `Ok`.
pub fn raw(bytes: &[u8]) -> io::Result<()> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// Writes the result of a command to stdout: an error if it cannot (a closed stdout is not).
pub fn result(bytes: &[u8]) -> Result<()> {
    raw(bytes).context("cannot write to standard output")
}

/// Writes human text to stdout, each line through [`terminal`]: an error if it cannot.
pub fn text(text: &str) -> Result<()> {
    result(lines(text).as_bytes())
}

/// Writes the report of a command that has changed a file (text or JSON) to stdout, each line
/// through [`terminal`]. Failing to is said on stderr and is not an error: the change was made.
pub fn report(text: &str) {
    if let Err(e) = raw(lines(text).as_bytes()) {
        stderr_line(format_args!(
            "nvram: warning: cannot write to standard output ({e}); the change was made"
        ));
    }
}

/// Writes one line (a newline is added) to stderr, through [`terminal`] line by line; dropped
/// if stderr cannot be written.
pub fn stderr_line(line: impl Display) {
    let line = line.to_string();
    let mut stderr = io::stderr().lock();
    let _ = writeln!(stderr, "{}", lines(&line));
}

/// `text` with each line escaped by [`terminal`], the newlines between them kept.
fn lines(text: &str) -> Cow<'_, str> {
    if text
        .split('\n')
        .all(|line| matches!(terminal(line), Cow::Borrowed(_)))
    {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.split('\n')
            .map(terminal)
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// `eprintln!` that never panics: [`stderr_line`] with `format!` arguments.
macro_rules! message {
    ($($arg:tt)*) => {
        $crate::cli::out::stderr_line(format_args!($($arg)*))
    };
}
pub(crate) use message;

#[cfg(test)]
mod tests {
    #[test]
    fn lines_are_escaped_and_newlines_kept() {
        assert_eq!(super::lines("a\nb\n"), "a\nb\n");
        assert_eq!(
            super::lines("a\x1b[2J\nb\u{202e}\n"),
            "a\\e[2J\nb\\u{202e}\n"
        );
    }
}
