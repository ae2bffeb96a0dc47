//! `nvram`: create, inspect and check UEFI variable stores of virtual machines.
//!
//! Exit status: 0 success; 1 a check found problems or a variable was not found; 2 an error
//! (unreadable file, not a varstore, bad arguments).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = <cli::Cli as clap::Parser>::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("nvram: error: {error:#}");
            ExitCode::from(2)
        }
    }
}
