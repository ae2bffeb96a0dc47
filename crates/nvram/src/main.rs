//! `nvram`: create, inspect and check UEFI variable stores of virtual machines.
//!
//! Exit status: 0 success; 1 a check found problems or a variable was not found; 2 an error
//! (unreadable file, not a varstore, bad arguments; the file written is unchanged); 3 the new
//! content is in place but may not be durable (the fsync of the directory after the rename
//! failed: a host crash may bring the old content back; the message names the file). A stdout closed by its reader ends the
//! output quietly and does not change the status; nor does a stderr that cannot be written
//! (see `cli/out.rs`).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = parse_args();
    match cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            cli::out::message!("nvram: error: {}", causes(&error));
            if error.chain().any(nvram::files::is_not_durable) {
                ExitCode::from(3)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

/// `clap::Parser::parse` without its clean-up: the command tree clap builds for every
/// subcommand (a few hundred arguments with their help) and the matches are left to the
/// process's exit instead of being freed one by one (measured: about a tenth of the cost of
/// parsing, which is most of `nvram --version`; `benches/list_floor.rs`). Errors, `--help`
/// and `--version` behave as with `parse`.
fn parse_args() -> cli::Cli {
    use clap::FromArgMatches;
    let argv: Vec<_> = std::env::args_os().collect();
    let mut command = cli::command_for(&argv);
    let mut matches = command
        .try_get_matches_from_mut(argv)
        .unwrap_or_else(|e| e.exit());
    let args = cli::Cli::from_arg_matches_mut(&mut matches)
        .unwrap_or_else(|e| e.format(&mut command).exit());
    std::mem::forget(matches);
    std::mem::forget(command);
    args
}

/// The error and its causes, `: `-separated, each said once. Our error types often put their
/// cause in their message and also return it as `source()` (`"{path}: {action}: {source}"`
/// with `#[source]`), which `{:#}` would print twice (`… (os error 2): … (os error 2)`); a
/// cause whose text is already in the message is left out.
fn causes(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    #[derive(Debug, thiserror::Error)]
    #[error("vm.fd: cannot open: {source}")]
    struct Embedding {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn each_cause_once() {
        let io = std::io::Error::from_raw_os_error(2);
        let error = anyhow::Error::new(Embedding { source: io }).context("cannot import x.json");
        let text = super::causes(&error);
        assert_eq!(text.matches("(os error 2)").count(), 1, "{text}");
        assert!(
            text.starts_with("cannot import x.json: vm.fd: cannot open: "),
            "{text}"
        );
        let plain = Err::<(), _>(std::io::Error::from_raw_os_error(13))
            .context("cannot read y")
            .unwrap_err();
        let text = super::causes(&plain);
        assert!(
            text.starts_with("cannot read y: ") && text.ends_with("(os error 13)"),
            "{text}"
        );
    }
}
