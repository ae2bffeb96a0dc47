//! Hardening of the output (issue 14): what a guest wrote into a store never reaches the
//! operator's terminal raw, output errors never panic, and error messages say each cause once.
//!
//! - Every human printer escapes control characters, bidi controls and invisible formatting
//!   (`nvram::escape::terminal`); JSON keeps the exact text, with them as `\uXXXX`.
//! - A stdout closed by its reader and a full stderr end no command with a panic (101): the
//!   status is the one the command would have had, and an edit is written.

mod common;

use common::{nvram, nvram_ok, path_str, stderr, stdout};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A variable name as a guest could write it: retitles and clears the terminal, then turns
/// the rest of the line right to left and hides a zero-width space in it.
const EVIL_NAME: &str = "\x1b]0;pwned\x07\x1b[2J\u{202e}Evil\u{200b}Name";
/// How the human outputs print it.
const EVIL_NAME_ESCAPED: &str = "\\e]0;pwned\\x07\\e[2J\\u{202e}Evil\\u{200b}Name";
/// A boot description in the same spirit: red text and an isolate.
const EVIL_DESCRIPTION: &str = "Debian\x1b[31m\u{2067}evil\u{2069}\x1b[0m\u{9b}2J";
const EVIL_DESCRIPTION_ESCAPED: &str = "Debian\\e[31m\\u{2067}evil\\u{2069}\\e[0m\\u{9b}2J";
/// Vendor GUID of the test variables.
const GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// Characters that must never appear raw in any output: ESC, BEL, CSI (C1), and bidi and
/// zero-width characters.
fn raw_dangerous(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| *c != '\n' && nvram::escape::is_escaped(*c))
        .collect()
}

fn assert_safe(what: &str, out: &Output) {
    for (stream, text) in [("stdout", stdout(out)), ("stderr", stderr(out))] {
        let raw = raw_dangerous(&text);
        assert!(
            raw.is_empty(),
            "{what}: raw {raw:?} on {stream}:\n{}",
            text.escape_debug()
        );
    }
}

/// A store with the evil variable set twice (append: the first copy is marked deleted) and
/// a Boot0000 entry with the evil description.
fn evil_store(dir: &Path) -> PathBuf {
    let vars = dir.join("evil.fd");
    let file = path_str(&vars);
    nvram_ok(&["create", file, "--layout", "ovmf-4m"]);
    let set = nvram_ok(&["set", file, EVIL_NAME, "--guid", GUID, "--u8", "1"]);
    assert_safe("set", &set);
    assert!(stderr(&set).contains(EVIL_NAME_ESCAPED), "{}", stderr(&set));
    nvram_ok(&["set", file, EVIL_NAME, "--guid", GUID, "--u8", "2"]);
    let add = nvram_ok(&[
        "boot",
        "add",
        file,
        "--description",
        EVIL_DESCRIPTION,
        "--file",
        "\\EFI\\debian\\shimx64.efi",
    ]);
    assert_safe("boot add", &add);
    vars
}

/// Makes the deleted first copy of the evil variable live again, so that `check` reports a
/// second live copy by name.
fn revive_first_copy(vars: &Path) {
    let all: serde_json::Value =
        serde_json::from_slice(&nvram_ok(&["list", path_str(vars), "--all", "--json"]).stdout)
            .unwrap();
    let first = all["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == EVIL_NAME && v["state"] != "added")
        .expect("the replaced copy is listed");
    let offset = first["offset"].as_u64().unwrap() as usize;
    let mut image = std::fs::read(vars).unwrap();
    image[offset + 2] = 0x3F; // State: VAR_ADDED
    std::fs::write(vars, image).unwrap();
}

#[test]
fn human_outputs_escape_names_and_descriptions() {
    let dir = tempfile::tempdir().unwrap();
    let vars = evil_store(dir.path());
    let file = path_str(&vars);

    let list = nvram_ok(&["list", file]);
    assert_safe("list", &list);
    assert!(
        stdout(&list).contains(EVIL_NAME_ESCAPED),
        "{}",
        stdout(&list)
    );
    // The Boot#### summary of `list` is escaped like `boot list`.
    assert!(
        stdout(&list).contains(&format!("\"{EVIL_DESCRIPTION_ESCAPED}\"")),
        "{}",
        stdout(&list)
    );

    let all = nvram_ok(&["list", "--all", file]);
    assert_safe("list --all", &all);
    assert_eq!(stdout(&all).matches(EVIL_NAME_ESCAPED).count(), 2);

    let get = nvram_ok(&["get", file, EVIL_NAME]);
    assert_safe("get", &get);
    assert!(
        stdout(&get).contains(&format!("name:       {EVIL_NAME_ESCAPED}\n")),
        "{}",
        stdout(&get)
    );
    let boot0 = nvram_ok(&["get", file, "Boot0000"]);
    assert_safe("get Boot0000", &boot0);
    assert!(stdout(&boot0).contains(EVIL_DESCRIPTION_ESCAPED));

    let boot = nvram_ok(&["boot", "list", file]);
    assert_safe("boot list", &boot);
    assert!(
        stdout(&boot).contains(&format!(
            "Boot0000  \"{EVIL_DESCRIPTION_ESCAPED}\"  \\EFI\\debian\\shimx64.efi\n"
        )),
        "{}",
        stdout(&boot)
    );

    let status = nvram_ok(&["secureboot", "status", file]);
    assert_safe("secureboot status", &status);

    // Error messages that quote a name.
    let missing = nvram(&["get", file, EVIL_NAME, "--guid", "EfiGlobalVariable"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_safe("get (not found)", &missing);
    assert!(stderr(&missing).contains(EVIL_NAME_ESCAPED));
    let missing = nvram(&["delete", file, EVIL_NAME, "--guid", "EfiGlobalVariable"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_safe("delete (not found)", &missing);
    assert!(stderr(&missing).contains(EVIL_NAME_ESCAPED));

    // `check` names the variable in a finding.
    revive_first_copy(&vars);
    let check = nvram(&["check", file]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    assert_safe("check", &check);
    assert!(
        stdout(&check).contains(&format!("second live (0x3F) copy of {EVIL_NAME_ESCAPED}")),
        "{}",
        stdout(&check)
    );
    assert_safe(
        "list --all (two live copies)",
        &nvram_ok(&["list", "--all", file]),
    );
}

#[test]
fn json_outputs_are_exact_and_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let vars = evil_store(dir.path());
    let file = path_str(&vars);
    let json = |args: &[&str]| -> serde_json::Value {
        let out = nvram_ok(args);
        assert_safe(&format!("{args:?}"), &out);
        // serde_json writes ESC as \u001b itself; ours also writes bidi and C1 as \uXXXX.
        assert!(stdout(&out).contains("\\u001b]0;pwned\\u0007\\u001b[2J\\u202eEvil\\u200bName"));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let export = json(&["export", file]);
    let names: Vec<&str> = export["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&EVIL_NAME), "{names:?}");
    let list = json(&["list", "--json", file]);
    assert!(list["variables"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == EVIL_NAME));
    let get = json(&["get", "--json", file, EVIL_NAME]);
    assert_eq!(get["name"], EVIL_NAME);

    let boot = nvram_ok(&["boot", "list", "--json", file]);
    assert_safe("boot list --json", &boot);
    let boot: serde_json::Value = serde_json::from_slice(&boot.stdout).unwrap();
    assert_eq!(boot["entries"][0]["description"], EVIL_DESCRIPTION);

    // The exported JSON imports back to the same name.
    let export_file = dir.path().join("evil.json");
    nvram_ok(&["export", file, "-o", path_str(&export_file)]);
    let copy = dir.path().join("copy.fd");
    nvram_ok(&["create", path_str(&copy), "--layout", "ovmf-4m"]);
    nvram_ok(&["import", path_str(&copy), "--json", path_str(&export_file)]);
    let raw = nvram_ok(&["get", "--raw", path_str(&copy), EVIL_NAME]);
    assert_eq!(raw.stdout, [2]);
}

#[test]
fn certificate_subjects_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.fd");
    let file = path_str(&vars);
    nvram_ok(&["create", file, "--layout", "ovmf-4m"]);
    let cert = dir.path().join("evil.pem");
    let key = dir.path().join("evil.key");
    common::run_tool(
        &testkit::require_tool("openssl"),
        &[
            "req",
            "-new",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-utf8",
            "-subj",
            &format!("/CN={EVIL_NAME}"),
            "-keyout",
            path_str(&key),
            "-out",
            path_str(&cert),
        ],
    );
    let add = nvram_ok(&["secureboot", "add-db", file, path_str(&cert)]);
    assert_safe("secureboot add-db", &add);
    let status = nvram_ok(&["secureboot", "status", file]);
    assert_safe("secureboot status", &status);
    // The subject's own rendering escapes C0 controls (`\1b`); the bidi override and the
    // zero-width space were printed raw before.
    assert!(
        stdout(&status).contains("\\u{202e}Evil\\u{200b}Name"),
        "{}",
        stdout(&status)
    );
    let list = nvram_ok(&["list", file]);
    assert_safe("list (db)", &list);
    let json = nvram_ok(&["secureboot", "status", "--json", file]);
    assert_safe("secureboot status --json", &json);
    assert!(
        stdout(&json).contains("\\u202eEvil\\u200bName"),
        "{}",
        stdout(&json)
    );
}

#[test]
fn apply_reports_escaped_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let evil = dir.path().join("vm\x1b[2J\u{202e}.fd");
    nvram_ok(&["create", path_str(&evil), "--layout", "ovmf-4m"]);
    let missing = dir.path().join("gone\x07.fd");
    let out = nvram(&[
        "apply",
        "--set",
        "Timeout=u16:3",
        path_str(&evil),
        path_str(&missing),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_safe("apply", &out);
    assert!(stdout(&out).contains("changed "), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("vm\\e[2J\\u{202e}.fd: "),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("gone\\x07.fd: "), "{}", stdout(&out));
    let json = nvram(&["apply", "--json", "--set", "Timeout=u16:4", path_str(&evil)]);
    assert_safe("apply --json", &json);
    let results: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(results[0]["file"], path_str(&evil));
}

/// Runs nvram with stdout a pipe whose reading end is already closed and stderr /dev/full.
fn run_closed(args: &[&str]) -> Output {
    // The pipe to the stdin of a process that has exited: no reader is left. (The parent
    // never holds the reading end.)
    let mut reader = Command::new("true")
        .stdin(Stdio::piped())
        .spawn()
        .expect("run true");
    let writer = reader.stdin.take().unwrap();
    assert!(reader.wait().unwrap().success());
    let full = File::options().write(true).open("/dev/full").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nvram"))
        .args(args)
        .stdout(writer)
        .stderr(full)
        .stdin(Stdio::null())
        .output()
        .expect("run nvram");
    assert_ne!(out.status.code(), Some(101), "nvram {args:?} panicked");
    assert!(
        out.status.code().is_some(),
        "nvram {args:?}: {:?}",
        out.status
    );
    out
}

#[test]
fn closed_stdout_and_full_stderr_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vm.fd");
    let file = path_str(&vars);
    nvram_ok(&["create", file, "--layout", "ovmf-4m"]);

    // An edit: written, status 0, although neither its message nor anything else is seen.
    let set = run_closed(&["set", file, "Timeout", "--u16", "8"]);
    assert_eq!(set.status.code(), Some(0));
    assert_eq!(nvram_ok(&["get", "--raw", file, "Timeout"]).stdout, [8, 0]);
    let add = run_closed(&[
        "boot",
        "add",
        file,
        "--description",
        "x",
        "--file",
        "\\x.efi",
    ]);
    assert_eq!(add.status.code(), Some(0));
    assert!(stdout(&nvram_ok(&["boot", "list", file])).contains("Boot0000"));

    // Readers: the status they have with the output read (errors and "not found" included,
    // their message unwritten).
    let zeros = dir.path().join("zeros.bin");
    std::fs::write(&zeros, [0u8; 4096]).unwrap();
    let not_a_store = dir.path().join("text.bin");
    std::fs::write(&not_a_store, [b'x'; 4096]).unwrap();
    let absent = dir.path().join("absent.fd");
    for (args, status) in [
        (vec!["list", file], 0),
        (vec!["list", "--all", file], 0),
        (vec!["list", "--json", file], 0),
        (vec!["get", file, "Timeout"], 0),
        (vec!["get", file, "NoSuchVariable"], 1),
        (vec!["export", file], 0),
        (vec!["boot", "list", file], 0),
        (vec!["secureboot", "status", file], 0),
        (vec!["check", file], 0),
        (vec!["check", "--json", file], 0),
        (vec!["check", path_str(&zeros)], 1),
        (vec!["check", path_str(&not_a_store)], 2),
        (vec!["list", path_str(&absent)], 2),
    ] {
        assert_eq!(nvram(&args).status.code(), Some(status), "{args:?}");
        assert_eq!(run_closed(&args).status.code(), Some(status), "{args:?}");
    }

    // apply: every file edited; 0 when none failed, 1 when one did.
    let second = dir.path().join("vm2.fd");
    nvram_ok(&["create", path_str(&second), "--layout", "ovmf-4m"]);
    let apply = run_closed(&["apply", "--set", "Timeout=u16:9", file, path_str(&second)]);
    assert_eq!(apply.status.code(), Some(0));
    for f in [file, path_str(&second)] {
        assert_eq!(nvram_ok(&["get", "--raw", f, "Timeout"]).stdout, [9, 0]);
    }
    let apply = run_closed(&["apply", "--set", "Timeout=u16:7", file, path_str(&absent)]);
    assert_eq!(apply.status.code(), Some(1));
    assert_eq!(nvram_ok(&["get", "--raw", file, "Timeout"]).stdout, [7, 0]);
    let apply = run_closed(&["apply", "--json", "--set", "Timeout=u16:6", file]);
    assert_eq!(apply.status.code(), Some(0));
}

/// Runs nvram with stdout /dev/full (every write fails with ENOSPC).
fn run_full_stdout(args: &[&str]) -> Output {
    let full = File::options().write(true).open("/dev/full").unwrap();
    Command::new(env!("CARGO_BIN_EXE_nvram"))
        .args(args)
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .expect("run nvram")
}

#[test]
fn full_stdout_fails_a_reader_but_not_an_edit() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vm.fd");
    let file = path_str(&vars);
    nvram_ok(&["create", file, "--layout", "ovmf-4m"]);
    nvram_ok(&["set", file, "Timeout", "--u16", "1"]);
    // A reader whose output is lost has failed.
    let list = run_full_stdout(&["list", file]);
    assert_eq!(list.status.code(), Some(2));
    assert!(
        stderr(&list).contains("cannot write to standard output"),
        "{}",
        stderr(&list)
    );
    assert_eq!(
        stderr(&list).matches("(os error").count(),
        1,
        "{}",
        stderr(&list)
    );
    // An edit was made: the status says so, a warning says what was not printed.
    let add = run_full_stdout(&[
        "boot",
        "add",
        file,
        "--description",
        "x",
        "--file",
        "\\x.efi",
    ]);
    assert_eq!(add.status.code(), Some(0), "{}", stderr(&add));
    assert!(
        stderr(&add).contains("the change was made"),
        "{}",
        stderr(&add)
    );
    let apply = run_full_stdout(&["apply", "--set", "Timeout=u16:5", file]);
    assert_eq!(apply.status.code(), Some(0), "{}", stderr(&apply));
    assert_eq!(nvram_ok(&["get", "--raw", file, "Timeout"]).stdout, [5, 0]);
}

#[test]
fn io_errors_say_the_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.fd");
    let absent = path_str(&absent);
    for args in [
        vec!["list", absent],
        vec!["check", absent],
        vec!["set", absent, "Timeout", "--u16", "1"],
        vec!["delete", absent, "Timeout", "--guid", "EfiGlobalVariable"],
        vec!["export", absent],
    ] {
        let out = nvram(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let message = stderr(&out);
        assert_eq!(
            message.matches("(os error").count(),
            1,
            "{args:?}: {message}"
        );
        assert!(message.contains(absent), "{args:?}: {message}");
    }
}
