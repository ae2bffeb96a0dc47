//! Conventions of a command-line tool: shell completions, the manual page, and `--json`
//! reports of the commands that change a store.

mod common;

use common::{nvram, nvram_ok, path_str, self_signed, stderr, stdout};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
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

/// Runs a changing command with its JSON flag, checks the members every report has and
/// returns the report.
fn json_of(args: &[&str], file: &Path) -> Value {
    let out = nvram_ok(args);
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", stdout(&out)));
    assert_eq!(doc["file"], path_str(file), "{args:?}");
    assert!(doc["written"].is_boolean(), "{args:?}: {doc}");
    assert!(doc["free_space"].is_u64(), "{args:?}: {doc}");
    assert!(doc["reclaim_at_boot"].is_boolean(), "{args:?}: {doc}");
    assert!(doc["variables"].is_array(), "{args:?}: {doc}");
    // The report replaces the text on stderr.
    assert!(stderr(&out).is_empty(), "{args:?}: {}", stderr(&out));
    doc
}

/// The (name, change) of each variable of a report, with its GUID checked.
fn changes(doc: &Value) -> Vec<(String, String)> {
    doc["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let guid = v["guid"].as_str().unwrap();
            assert_eq!(guid.len(), 36, "{v}");
            (
                v["name"].as_str().unwrap().to_string(),
                v["change"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn blank_store(dir: &Path, name: &str) -> std::path::PathBuf {
    let file = dir.join(name);
    nvram_ok(&["create", path_str(&file)]);
    file
}

#[test]
fn set_and_delete_report_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = blank_store(dir.path(), "vars.fd");
    let f = path_str(&file);
    let doc = json_of(&["set", f, "Timeout", "--u16", "5", "--json"], &file);
    assert_eq!(changes(&doc), pairs(&[("Timeout", "added")]));
    assert_eq!(
        doc["variables"][0]["guid"],
        "8be4df61-93ca-11d2-aa0d-00e098032b8c"
    );
    assert_eq!(doc["written"], true);
    assert_eq!(doc["compacted"], false);
    let doc = json_of(&["set", f, "Timeout", "--u16", "5", "--json"], &file);
    assert_eq!(changes(&doc), pairs(&[("Timeout", "unchanged")]));
    assert_eq!(doc["written"], false);
    let doc = json_of(
        &[
            "set",
            f,
            "Timeout",
            "--u16",
            "7",
            "--strategy",
            "compact",
            "--json",
        ],
        &file,
    );
    assert_eq!(changes(&doc), pairs(&[("Timeout", "replaced")]));
    let doc = json_of(&["delete", f, "Timeout", "--json"], &file);
    assert_eq!(changes(&doc), pairs(&[("Timeout", "deleted")]));
    // No such variable: status 1, nothing on stdout.
    let out = nvram(&["delete", f, "Timeout", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    // Without --json, the text is unchanged: one line on stderr, nothing on stdout.
    let out = nvram_ok(&["set", f, "Timeout", "--u16", "5"]);
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("Timeout"), "{}", stderr(&out));
    assert!(stderr(&out).contains(": added"), "{}", stderr(&out));
}

#[test]
fn import_reports_json_per_variable() {
    let dir = tempfile::tempdir().unwrap();
    let file = blank_store(dir.path(), "vars.fd");
    let f = path_str(&file);
    nvram_ok(&["set", f, "Old", "--u8", "1"]);
    nvram_ok(&["set", f, "Same", "--u8", "2"]);
    nvram_ok(&["set", f, "Changed", "--u8", "3"]);
    let list = dir.path().join("list.json");
    let g = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
    std::fs::write(
        &list,
        format!(
            r#"{{"version": 2, "variables": [
                {{"name": "New", "guid": "{g}", "attr": 7, "data": "01"}},
                {{"name": "Same", "guid": "{g}", "attr": 7, "data": "02"}},
                {{"name": "Changed", "guid": "{g}", "attr": 7, "data": "04"}}]}}"#
        ),
    )
    .unwrap();
    let doc = json_of(
        &[
            "import",
            f,
            "--json",
            path_str(&list),
            "--replace-all",
            "--json-report",
        ],
        &file,
    );
    let got = changes(&doc);
    assert_eq!(
        &got[..3],
        &pairs(&[
            ("New", "added"),
            ("Same", "unchanged"),
            ("Changed", "replaced")
        ])[..]
    );
    // --replace-all deleted Old (and the template's other variables, if any).
    assert!(
        got[3..].contains(&("Old".to_string(), "deleted".to_string())),
        "{got:?}"
    );
    assert!(got[3..].iter().all(|(_, c)| c == "deleted"), "{got:?}");
    assert_eq!(doc["imported"], 3);
    assert_eq!(doc["added"], 1);
    assert_eq!(doc["replaced"], 1);
    assert_eq!(doc["unchanged"], 1);
    assert_eq!(doc["deleted"].as_u64().unwrap() as usize, got.len() - 3);
    assert_eq!(doc["json"], path_str(&list));
}

#[test]
fn boot_commands_report_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = blank_store(dir.path(), "vars.fd");
    let f = path_str(&file);
    let doc = json_of(
        &[
            "boot",
            "add",
            f,
            "--description",
            "debian",
            "--file",
            "\\EFI\\debian\\shimx64.efi",
            "--json",
        ],
        &file,
    );
    assert_eq!(doc["number"], "0000");
    assert_eq!(doc["description"], "debian");
    assert_eq!(
        changes(&doc),
        pairs(&[("Boot0000", "added"), ("BootOrder", "added")])
    );
    json_of(
        &[
            "boot",
            "add",
            f,
            "--description",
            "net",
            "--uri",
            "http://x/y.efi",
            "--json",
        ],
        &file,
    );
    let doc = json_of(&["boot", "order", f, "0001,0000", "--json"], &file);
    assert_eq!(doc["boot_order"], serde_json::json!(["0001", "0000"]));
    assert_eq!(changes(&doc), pairs(&[("BootOrder", "replaced")]));
    let doc = json_of(&["boot", "remove", f, "0001", "--json"], &file);
    assert_eq!(doc["number"], "0001");
    assert_eq!(
        changes(&doc),
        pairs(&[("Boot0001", "deleted"), ("BootOrder", "replaced")])
    );
}

#[test]
fn secureboot_commands_report_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = blank_store(dir.path(), "vars.fd");
    let f = path_str(&file);
    let (_, pk) = self_signed(dir.path(), "pk", "Test PK");
    let doc = json_of(
        &[
            "secureboot",
            "enroll",
            f,
            "--pk",
            path_str(&pk),
            "--kek",
            path_str(&pk),
            "--db",
            path_str(&pk),
            "--json",
        ],
        &file,
    );
    let got = changes(&doc);
    for name in ["PK", "KEK", "db", "dbx", "SecureBootEnable", "CustomMode"] {
        assert!(got.iter().any(|(n, _)| n == name), "{name} not in {got:?}");
    }
    assert_eq!(got[0], ("PK".to_string(), "added".to_string()));
    assert_eq!(doc["variables"][0]["entries"], 1);
    assert!(doc["variables"][0]["time"].is_string());
    let db = doc["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "db")
        .unwrap();
    assert_eq!(db["guid"], "d719b2cb-3d3a-4596-a3bc-dad00e67656f");
    for (command, name) in [("add-kek", "KEK"), ("add-db", "db")] {
        let doc = json_of(
            &["secureboot", command, f, "--microsoft", "2023", "--json"],
            &file,
        );
        assert_eq!(changes(&doc), pairs(&[(name, "replaced")]), "{command}");
        assert!(doc["variables"][0]["added"].as_u64().unwrap() >= 1);
        // Again: nothing new.
        let doc = json_of(
            &["secureboot", command, f, "--microsoft", "2023", "--json"],
            &file,
        );
        assert_eq!(changes(&doc), pairs(&[(name, "unchanged")]), "{command}");
        assert_eq!(doc["written"], false);
    }
    let doc = json_of(
        &["secureboot", "add-dbx", f, path_str(&pk), "--json"],
        &file,
    );
    assert_eq!(changes(&doc), pairs(&[("dbx", "replaced")]));
}

#[test]
fn failed_edits_with_json_print_nothing_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let file = blank_store(dir.path(), "vars.fd");
    let f = path_str(&file);
    let before = std::fs::read(&file).unwrap();
    let huge = dir.path().join("huge.bin");
    std::fs::write(&huge, vec![0u8; 0x10000]).unwrap();
    let missing = dir.path().join("missing.fd");
    let list = dir.path().join("bad.json");
    std::fs::write(
        &list,
        r#"{"variables": [{"name": "X", "guid": "not-a-guid", "attr": 7, "data": "01"}]}"#,
    )
    .unwrap();
    let cert = dir.path().join("not-a-cert.pem");
    std::fs::write(&cert, "nothing").unwrap();
    let failing: Vec<Vec<&str>> = vec![
        vec!["set", f, "Big", "--data-file", path_str(&huge), "--json"],
        vec!["set", path_str(&missing), "X", "--u8", "1", "--json"],
        vec!["delete", f, "X", "--guid", "nonsense", "--json"],
        vec!["import", f, "--json", path_str(&list), "--json-report"],
        vec!["boot", "order", f, "0007", "--json"],
        vec!["boot", "remove", f, "0007", "--json"],
        vec![
            "boot",
            "add",
            f,
            "--description",
            "x",
            "--uri",
            "",
            "--json",
        ],
        vec!["secureboot", "enroll", f, "--pk", path_str(&cert), "--json"],
        vec!["secureboot", "add-kek", f, path_str(&cert), "--json"],
        vec!["secureboot", "add-db", f, "--json"],
        vec!["secureboot", "add-dbx", f, path_str(&cert), "--json"],
    ];
    for args in &failing {
        let out = nvram(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}: {}", stdout(&out));
        // nvram's errors start with "nvram: ", clap's (a refused --guid) with "error: ".
        let message = stderr(&out);
        assert!(
            message.starts_with("nvram: ") || message.starts_with("error: "),
            "{args:?}: {message}"
        );
        assert_eq!(
            std::fs::read(&file).unwrap(),
            before,
            "{args:?} changed the file"
        );
    }
}

#[test]
fn guid_options_take_a_guid_or_a_known_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = blank_store(dir.path(), "vars.fd");
    let f = path_str(&file);
    let global = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
    let (_, cert) = self_signed(dir.path(), "db", "Test db");
    for (given, change) in [
        ("EfiGlobalVariable", "added"),
        ("8BE4DF61-93CA-11D2-AA0D-00E098032B8C", "unchanged"),
        (global, "unchanged"),
    ] {
        let doc = json_of(
            &["set", f, "X", "--guid", given, "--u8", "1", "--json"],
            &file,
        );
        assert_eq!(doc["variables"][0]["guid"], global, "{given}");
        assert_eq!(doc["variables"][0]["change"], change, "{given}");
    }
    let doc = json_of(
        &["delete", f, "X", "--guid", "EfiGlobalVariable", "--json"],
        &file,
    );
    assert_eq!(changes(&doc), pairs(&[("X", "deleted")]));
    let doc = json_of(
        &[
            "secureboot",
            "add-db",
            f,
            path_str(&cert),
            "--owner",
            "EfiGlobalVariable",
            "--json",
        ],
        &file,
    );
    assert_eq!(changes(&doc), pairs(&[("db", "added")]));
    let status = stdout(&nvram_ok(&["secureboot", "status", f, "--json"]));
    assert!(status.contains(global), "{status}");
    // Refused, quoted escaped, exit status 2, the file unchanged.
    let before = std::fs::read(&file).unwrap();
    for args in [
        vec!["set", f, "Y", "--guid", "bad\x1b[2J", "--u8", "1"],
        vec!["delete", f, "Y", "--guid", "bad\x1b[2J"],
        vec![
            "secureboot",
            "add-kek",
            f,
            "--microsoft",
            "2023",
            "--owner",
            "bad\x1b[2J",
        ],
        vec![
            "secureboot",
            "enroll",
            f,
            "--pk",
            f,
            "--owner",
            "bad\x1b[2J",
        ],
    ] {
        let out = nvram(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
        let message = stderr(&out);
        assert!(
            message.contains("is not a GUID or a known GUID name"),
            "{message}"
        );
        assert!(message.contains("\"bad\\u{1b}[2J\""), "{message}");
        assert!(!message.contains('\x1b'), "{message}");
        assert_eq!(std::fs::read(&file).unwrap(), before, "{args:?}");
    }
}

/// The README's table of the top-level members of the whole-store commands' JSON reports: per
/// row label (`prepare (refused)`), the backquoted names outside parentheses.
fn documented_members() -> BTreeMap<String, BTreeSet<String>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let rows = readme
        .lines()
        .skip_while(|l| *l != "| command | members |")
        .skip(2)
        .take_while(|l| l.starts_with('|'));
    let mut table = BTreeMap::new();
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let label = cells[1].replace('`', "");
        // Names in parentheses describe a member's contents, not the report's members.
        let mut outside = String::new();
        let mut depth = 0;
        for c in cells[2].chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth == 0 => outside.push(c),
                _ => {}
            }
        }
        let names = outside
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        table.insert(label, names);
    }
    assert!(table.len() >= 8, "the README's table: {table:?}");
    table
}

fn members(doc: &Value) -> BTreeSet<String> {
    doc.as_object()
        .unwrap_or_else(|| panic!("not an object: {doc}"))
        .keys()
        .cloned()
        .collect()
}

fn report_of(args: &[&str], expected_status: i32) -> Value {
    let out = nvram(args);
    assert_eq!(
        out.status.code(),
        Some(expected_status),
        "{args:?}: {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", stdout(&out)))
}

#[test]
fn whole_store_reports_have_the_members_the_readme_documents() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    let template = common::debian("OVMF_VARS_4M.ms.fd");
    let t = path_str(&template);
    let mut seen = BTreeMap::new();
    let (store, qcow2, fresh, small) = (d("vm.fd"), d("vm.qcow2"), d("new.fd"), d("small.fd"));
    let create = report_of(&["create", path_str(&store), "--json"], 0);
    assert_eq!(create["layout"], "ovmf-4m");
    assert_eq!(
        create["bytes"].as_u64(),
        Some(std::fs::metadata(&store).unwrap().len())
    );
    seen.insert("create", create);
    let leftover = d(".vm.fd.nvram-0123456789abcdef.tmp");
    std::fs::write(&leftover, b"partial").unwrap();
    let clean = report_of(&["clean", path_str(&store), "--json"], 0);
    assert_eq!(clean["removed"][0]["bytes"], 7, "{clean}");
    assert!(!leftover.exists());
    seen.insert("clean", clean);
    let reset = ["reset", "--nvram", path_str(&store), "--template", t];
    seen.insert("reset", report_of(&[&reset[..], &["--json"]].concat(), 0));
    let convert = [
        "convert",
        path_str(&store),
        path_str(&qcow2),
        "--to",
        "qcow2",
    ];
    seen.insert(
        "convert",
        report_of(&[&convert[..], &["--json"]].concat(), 0),
    );
    let upgrade = ["upgrade", "--nvram", path_str(&store), "--template", t];
    seen.insert(
        "upgrade",
        report_of(&[&upgrade[..], &["--json"]].concat(), 0),
    );
    let prepare = ["prepare", "--nvram", path_str(&fresh), "--template", t];
    seen.insert(
        "prepare",
        report_of(&[&prepare[..], &["--json"]].concat(), 0),
    );
    nvram_ok(&["create", "--layout", "ovmf-2m", path_str(&small)]);
    let refused = ["prepare", "--nvram", path_str(&small), "--template", t];
    let refused = report_of(&[&refused[..], &["--json"]].concat(), 1);
    assert_eq!(refused["ok"], false);
    seen.insert("prepare (refused)", refused);
    let apply = [
        "apply",
        "--set",
        "Timeout=u16:3",
        path_str(&store),
        "--json",
    ];
    let apply = report_of(&apply, 0);
    assert_eq!(apply.as_array().map(Vec::len), Some(1), "{apply}");
    seen.insert("apply", apply[0].clone());

    let got: BTreeMap<String, BTreeSet<String>> = seen
        .iter()
        .map(|(label, doc)| (label.to_string(), members(doc)))
        .collect();
    assert_eq!(got, documented_members());
}
