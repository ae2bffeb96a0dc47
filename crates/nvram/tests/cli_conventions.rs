//! Conventions of a command-line tool: shell completions, the manual page, and `--json`
//! reports of the commands that change a store.

mod common;

use common::{nvram, nvram_ok, stderr, stdout};
use std::io::Write;
use std::process::{Command, Stdio};

/// The subcommands `nvram --help` lists (without `help`), so a command added later is
/// checked too; the ones known today must be among them.
fn subcommands() -> Vec<String> {
    let help = stdout(&nvram_ok(&["--help"]));
    let names: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_string)
        .collect();
    for known in [
        "create",
        "list",
        "get",
        "check",
        "export",
        "set",
        "delete",
        "import",
        "boot",
        "secureboot",
        "apply",
        "upgrade",
        "completions",
        "man",
    ] {
        assert!(names.iter().any(|n| n == known), "{known} not in {names:?}");
    }
    names
}

#[test]
fn bash_completion_names_every_subcommand_and_parses() {
    let script = stdout(&nvram_ok(&["completions", "bash"]));
    for name in subcommands() {
        assert!(script.contains(&name), "bash completion lacks {name}");
    }
    // Nested subcommands too.
    for name in ["add-kek", "add-dbx", "enroll", "order", "remove"] {
        assert!(script.contains(name), "bash completion lacks {name}");
    }
    let mut bash = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    bash.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = bash.wait_with_output().unwrap();
    assert!(out.status.success(), "bash -n: {}", stderr(&out));
}

#[test]
fn zsh_and_fish_completions_name_subcommands() {
    let names = subcommands();
    for shell in ["zsh", "fish"] {
        let script = stdout(&nvram_ok(&["completions", shell]));
        assert!(!script.trim().is_empty(), "{shell}: empty");
        for name in &names {
            assert!(
                script.contains(name.as_str()),
                "{shell} completion lacks {name}"
            );
        }
    }
    let zsh = stdout(&nvram_ok(&["completions", "zsh"]));
    assert!(
        zsh.starts_with("#compdef nvram"),
        "{}",
        &zsh[..40.min(zsh.len())]
    );
}

#[test]
fn completions_refuse_an_unknown_shell() {
    let out = nvram(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).is_empty());
}

#[test]
fn man_page_is_roff_naming_every_subcommand() {
    let roff = stdout(&nvram_ok(&["man"]));
    assert!(roff.contains(".TH nvram "), "no .TH nvram");
    assert!(roff.contains(".SH NAME"));
    assert!(roff.contains(".SH SYNOPSIS"));
    for name in subcommands() {
        // Listed in nvram's own page and given a page of its own.
        assert!(roff.contains(&name), "man page lacks {name}");
        assert!(
            roff.contains(&format!(".TH nvram-{name} ")),
            "no page for nvram-{name}"
        );
    }
    for page in ["nvram-boot-add", "nvram-secureboot-add-kek"] {
        assert!(roff.contains(&format!(".TH {page} ")), "no page {page}");
    }
    // Options of subcommands are documented.
    assert!(roff.contains("\\-\\-strategy"));
    assert!(roff.contains("\\-\\-data\\-hex"));
}
