//! The `nvram.fleet` Ansible collection (`ansible/`): its module `nvram_apply` run by
//! ansible-core (pinned in `scripts/install-test-deps`, installed in `target/peers/ansible`)
//! on inventories of several hosts reached with `ansible_connection=local`, each with its own
//! directory of stores, both as an installed collection (`ansible-galaxy collection install`)
//! and through `ANSIBLE_LIBRARY`. What each host's task returned is recorded by a small
//! callback plugin written here; every check reads those results or the stores themselves.
//!
//! A machine without ansible-core makes these tests fail, naming the script that installs
//! it: they never skip.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const NVRAM: &str = env!("CARGO_BIN_EXE_nvram");
const MS_TEMPLATE: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
const HOSTS: [&str; 3] = ["kvm1", "kvm2", "kvm3"];

/// Records every task result of every host as one JSON line in $NVRAM_TEST_RECORD.
const RECORD_CALLBACK: &str = r#"
import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "record"
    CALLBACK_NEEDS_ENABLED = True

    def _record(self, status, result):
        line = dict(host=result.host.get_name(), task=result.task.get_name(), status=status,
                    result=result.result)
        with open(os.environ["NVRAM_TEST_RECORD"], "a") as f:
            f.write(json.dumps(line, default=str) + "\n")

    def v2_runner_on_ok(self, result):
        self._record("changed" if result.result.get("changed") else "ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record("failed", result)

    def v2_runner_on_skipped(self, result):
        self._record("skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._record("unreachable", result)
"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A program of the pinned ansible-core; panics (the test fails) when it is not installed.
fn ansible_bin(name: &str) -> PathBuf {
    let path = repo().join("target/peers/ansible/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-test-deps (it installs ansible-core into \
         target/peers/ansible)",
        path.display()
    );
    path
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn nvram(args: &[&str]) -> Output {
    Command::new(NVRAM)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// One task result of one host.
#[derive(Debug, Clone)]
struct Record {
    status: String,
    result: Value,
}

struct Run {
    output: Output,
    /// Task name -> host -> result.
    records: BTreeMap<String, BTreeMap<String, Record>>,
}

impl Run {
    fn ok(&self) -> bool {
        self.output.status.success()
    }

    fn log(&self) -> String {
        format!(
            "ansible-playbook exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.output.status.code(),
            text(&self.output.stdout),
            text(&self.output.stderr)
        )
    }

    /// What `task` returned on `host`.
    fn of(&self, task: &str, host: &str) -> &Record {
        self.records
            .get(task)
            .and_then(|hosts| hosts.get(host))
            .unwrap_or_else(|| panic!("no result of task {task:?} on {host}\n{}", self.log()))
    }

    /// File name -> result of each store of `host`'s task.
    fn stores(&self, task: &str, host: &str) -> BTreeMap<String, String> {
        let record = self.of(task, host);
        record.result["stores"]
            .as_array()
            .unwrap_or_else(|| panic!("{host}: no stores in {:#}", record.result))
            .iter()
            .map(|store| {
                let file = Path::new(store["file"].as_str().unwrap());
                (
                    file.file_name().unwrap().to_str().unwrap().to_string(),
                    store["result"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

/// Hosts with `ansible_connection=local`, each with its own directory of stores, and a place
/// for everything Ansible writes.
struct Fleet {
    tmp: tempfile::TempDir,
    /// Host -> its stores directory.
    dirs: BTreeMap<String, PathBuf>,
    /// Host -> extra inventory variables.
    vars: BTreeMap<String, Vec<(String, String)>>,
    /// Environment of every run (after a cleared one).
    env: Vec<(String, String)>,
}

impl Fleet {
    /// `hosts`, each with `a_VARS.fd` (Debian's Microsoft-enrolled template),
    /// `b_VARS.fd` (a blank store from `nvram create`) and `c_VARS.fd` (the template again).
    fn new(hosts: &[&str]) -> Fleet {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let callbacks = root.join("callbacks");
        fs::create_dir(&callbacks).unwrap();
        fs::write(callbacks.join("record.py"), RECORD_CALLBACK).unwrap();
        let home = root.join("home");
        fs::create_dir(&home).unwrap();
        let mut dirs = BTreeMap::new();
        for host in hosts {
            let dir = root.join("hosts").join(host);
            fs::create_dir_all(&dir).unwrap();
            fs::copy(MS_TEMPLATE, dir.join("a_VARS.fd"))
                .unwrap_or_else(|e| panic!("{MS_TEMPLATE}: {e} (Debian 12's ovmf package)"));
            let out = nvram(&["create", s(&dir.join("b_VARS.fd"))]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            fs::copy(MS_TEMPLATE, dir.join("c_VARS.fd")).unwrap();
            dirs.insert(host.to_string(), dir);
        }
        let env = [
            ("HOME", s(&home)),
            ("LC_ALL", "C.UTF-8"),
            ("LANG", "C.UTF-8"),
            // No nvram on PATH unless a test puts one there.
            ("PATH", "/usr/bin:/bin"),
            ("ANSIBLE_CALLBACK_PLUGINS", s(&callbacks)),
            ("ANSIBLE_CALLBACKS_ENABLED", "record"),
            ("ANSIBLE_LOCAL_TEMP", s(&root.join("ansible-local"))),
            ("ANSIBLE_REMOTE_TEMP", s(&root.join("ansible-remote"))),
            ("ANSIBLE_COLLECTIONS_SCAN_SYS_PATH", "false"),
            ("ANSIBLE_COLLECTIONS_PATH", s(&root.join("no-collections"))),
            ("ANSIBLE_NOCOLOR", "1"),
            ("ANSIBLE_RETRY_FILES_ENABLED", "false"),
            ("NVRAM_TEST_RECORD", s(&root.join("record.jsonl"))),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Fleet {
            tmp,
            dirs,
            vars: BTreeMap::new(),
            env,
        }
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    fn dir(&self, host: &str) -> &Path {
        &self.dirs[host]
    }

    fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Puts a directory holding only `nvram` (the one under test) first on PATH.
    fn nvram_on_path(&mut self) {
        let bin = self.root().join("bin");
        fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(NVRAM, bin.join("nvram")).unwrap();
        self.set_env("PATH", &format!("{}:/usr/bin:/bin", bin.display()));
    }

    /// The inventory: group `hypervisors`, each host with `stores_dir` and its extra vars.
    fn inventory(&self) -> PathBuf {
        let mut ini = String::from("[hypervisors]\n");
        for (host, dir) in &self.dirs {
            ini += &format!("{host} stores_dir={}", dir.display());
            for (k, v) in self.vars.get(host).into_iter().flatten() {
                ini += &format!(" {k}={v}");
            }
            ini += "\n";
        }
        ini += "\n[hypervisors:vars]\nansible_connection=local\n";
        // The module runs under the host's Python (Debian 12's 3.11), not ansible-core's venv.
        ini += "ansible_python_interpreter=/usr/bin/python3\n";
        let path = self.root().join("hosts.ini");
        fs::write(&path, ini).unwrap();
        path
    }

    fn playbook(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.root().join(name);
        fs::write(&path, yaml).unwrap();
        path
    }

    fn play(&self, playbook: &str, args: &[&str]) -> Run {
        let record = self.root().join("record.jsonl");
        let _ = fs::remove_file(&record);
        let inventory = self.inventory();
        let output = Command::new(ansible_bin("ansible-playbook"))
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.root())
            .arg("-i")
            .arg(&inventory)
            .arg(playbook)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let mut records: BTreeMap<String, BTreeMap<String, Record>> = BTreeMap::new();
        for line in fs::read_to_string(&record).unwrap_or_default().lines() {
            let line: Value = serde_json::from_str(line).unwrap();
            records
                .entry(line["task"].as_str().unwrap().to_string())
                .or_default()
                .insert(
                    line["host"].as_str().unwrap().to_string(),
                    Record {
                        status: line["status"].as_str().unwrap().to_string(),
                        result: line["result"].clone(),
                    },
                );
        }
        Run { output, records }
    }

    /// Every store of every host, byte for byte.
    fn contents(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut all = BTreeMap::new();
        for dir in self.dirs.values() {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                all.insert(path.clone(), fs::read(&path).unwrap());
            }
        }
        all
    }
}

fn all_stores(result: &str) -> BTreeMap<String, String> {
    ["a_VARS.fd", "b_VARS.fd", "c_VARS.fd"]
        .iter()
        .map(|f| (f.to_string(), result.to_string()))
        .collect()
}

/// The diff of each store, file name -> (before, after).
fn diffs(record: &Record) -> BTreeMap<String, (String, String)> {
    record.result["diff"]
        .as_array()
        .unwrap_or_else(|| panic!("no diff in {:#}", record.result))
        .iter()
        .map(|d| {
            let file = Path::new(d["before_header"].as_str().unwrap());
            assert_eq!(d["before_header"], d["after_header"]);
            (
                file.file_name().unwrap().to_str().unwrap().to_string(),
                (
                    d["before"].as_str().unwrap().to_string(),
                    d["after"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

const ROLLOUT_TASK: &str = "Add the 2023 KEK, db CAs and dbx update where missing";
const KEK_2023: &str = "CN=Microsoft Corporation KEK 2K CA 2023";

/// The README's playbook for the 2023 rollout, run from the installed collection
/// (`ansible-playbook nvram.fleet.rollout_2023`) with `nvram` on PATH: check mode changes no
/// byte and predicts the diff, the first run changes every store of every host, the second
/// none, check mode then reports nothing to do.
#[test]
fn rollout_2023_playbook_changes_every_store_once() {
    let playbook_file = repo().join("ansible/playbooks/rollout_2023.yml");
    let playbook = fs::read_to_string(&playbook_file).unwrap();
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains(&playbook),
        "README.md shows ansible/playbooks/rollout_2023.yml as it is"
    );

    let mut fleet = Fleet::new(&HOSTS);
    fleet.nvram_on_path();
    let collections = fleet.root().join("collections");
    let out = Command::new(ansible_bin("ansible-galaxy"))
        .env_clear()
        .envs(fleet.env.iter().map(|(k, v)| (k, v)))
        .args(["collection", "install", "--offline", "-p"])
        .arg(&collections)
        .arg(repo().join("ansible"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ansible-galaxy collection install: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(collections
        .join("ansible_collections/nvram/fleet/plugins/modules/nvram_apply.py")
        .is_file());
    fleet.set_env("ANSIBLE_COLLECTIONS_PATH", s(&collections));
    let original = fleet.contents();

    // Check mode with --diff: every store would change, no byte does, nothing is left behind.
    let check = fleet.play("nvram.fleet.rollout_2023", &["--check", "--diff"]);
    assert!(check.ok(), "{}", check.log());
    let mut predicted = BTreeMap::new();
    for host in HOSTS {
        let record = check.of(ROLLOUT_TASK, host);
        assert_eq!(record.status, "changed", "{host}: {:#}", record.result);
        assert_eq!(check.stores(ROLLOUT_TASK, host), all_stores("would-change"));
        assert!(record.result["cmd"]
            .as_array()
            .unwrap()
            .contains(&Value::from("--dry-run")));
        assert_eq!(record.result["summary"]["would_change"], 3);
        let diff = diffs(record);
        assert_eq!(diff.len(), 3, "{host}: {diff:#?}");
        for (file, (before, after)) in &diff {
            assert!(!before.contains(KEK_2023), "{host} {file}: {before}");
            assert!(after.contains(KEK_2023), "{host} {file}: {after}");
            assert!(after.contains("Windows UEFI CA 2023"), "{host} {file}");
        }
        // The Microsoft-enrolled template keeps its 2011 KEK, PK and other variables.
        let (before, after) = &diff["a_VARS.fd"];
        for line in before.lines() {
            let name = line.split_whitespace().nth(1).unwrap();
            if !["KEK", "db", "dbx"].contains(&name) {
                assert!(after.contains(line), "{host}: {line} kept");
            }
        }
        assert!(after.contains("CN=Microsoft Corporation KEK CA 2011"));
        predicted.insert(host, diff);
    }
    assert!(
        fleet.contents() == original,
        "check mode wrote no store and left no file"
    );

    // The rollout: every store of every host changes, as check mode said it would.
    let first = fleet.play("nvram.fleet.rollout_2023", &["--diff"]);
    assert!(first.ok(), "{}", first.log());
    for host in HOSTS {
        let record = first.of(ROLLOUT_TASK, host);
        assert_eq!(record.status, "changed", "{host}: {:#}", record.result);
        assert_eq!(first.stores(ROLLOUT_TASK, host), all_stores("changed"));
        assert_eq!(record.result["summary"]["changed"], 3);
        assert_eq!(record.result["locked"], Value::Array(vec![]));
        assert_eq!(
            diffs(record),
            predicted[host],
            "{host}: the diff is the one check mode showed"
        );
        // No store locked: the debug task is skipped.
        assert_eq!(
            first
                .of(
                    "Stores of running VMs, to do again once they are stopped",
                    host
                )
                .status,
            "skipped"
        );
    }
    let rolled_out = fleet.contents();
    for (path, bytes) in &rolled_out {
        assert_ne!(bytes, &original[path], "{} changed", path.display());
        let list = nvram(&["list", s(path)]);
        assert!(text(&list.stdout).contains(KEK_2023), "{}", path.display());
    }

    // Again: nothing to do anywhere.
    let second = fleet.play("nvram.fleet.rollout_2023", &["--diff"]);
    assert!(second.ok(), "{}", second.log());
    for host in HOSTS {
        let record = second.of(ROLLOUT_TASK, host);
        assert_eq!(record.status, "ok", "{host}: {:#}", record.result);
        assert_eq!(record.result["changed"], false);
        assert_eq!(second.stores(ROLLOUT_TASK, host), all_stores("unchanged"));
        assert_eq!(record.result["diff"], Value::Array(vec![]));
    }
    assert!(text(&second.output.stdout).contains("changed=0"));
    assert!(
        fleet.contents() == rolled_out,
        "the second run wrote nothing"
    );

    // Check mode now has nothing to report either.
    let check = fleet.play("nvram.fleet.rollout_2023", &["--check"]);
    assert!(check.ok(), "{}", check.log());
    for host in HOSTS {
        assert_eq!(check.of(ROLLOUT_TASK, host).status, "ok");
        assert_eq!(check.stores(ROLLOUT_TASK, host), all_stores("unchanged"));
    }
    assert!(fleet.contents() == rolled_out);
}

const TIMEOUT_PLAYBOOK: &str = r#"
- hosts: hypervisors
  gather_facts: false
  tasks:
    - name: timeout
      nvram_apply:
        dir: "{{ omit if store_files is defined else stores_dir }}"
        files: "{{ store_files | default(omit) }}"
        set:
          - Timeout=u16:7
        executable: "{{ nvram }}"
        fail_on_locked: "{{ strict | default(false) | bool }}"
        wait: "{{ (wait | int) if wait is defined else omit }}"
"#;

/// Through `ANSIBLE_LIBRARY` and the `executable` option (no nvram on PATH), one host naming
/// its stores with `files` rather than `dir`: a store locked by a running VM is skipped and
/// reported, the play goes on and succeeds; with `fail_on_locked` that host fails; with `wait`
/// the store is edited once the VM lets it go.
#[test]
fn locked_store_is_reported_and_fails_the_play_only_when_asked() {
    let mut fleet = Fleet::new(&HOSTS);
    fleet.set_env(
        "ANSIBLE_LIBRARY",
        s(&repo().join("ansible/plugins/modules")),
    );
    for host in HOSTS {
        fleet
            .vars
            .insert(host.into(), vec![("nvram".into(), NVRAM.into())]);
    }
    let kvm3: Vec<String> = ["c_VARS.fd", "a_VARS.fd", "b_VARS.fd"]
        .iter()
        .map(|f| format!("'{}'", fleet.dir("kvm3").join(f).display()))
        .collect();
    fleet
        .vars
        .get_mut("kvm3")
        .unwrap()
        .push(("store_files".into(), format!("\"[{}]\"", kvm3.join(", "))));
    let playbook = fleet.playbook("timeout.yml", TIMEOUT_PLAYBOOK);
    let playbook = s(&playbook);

    // The lock a running VM's flash device holds.
    let locked = fleet.dir("kvm2").join("b_VARS.fd");
    let holder = fs::File::open(&locked).unwrap();
    rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let locked_bytes = fs::read(&locked).unwrap();

    let run = fleet.play(playbook, &[]);
    assert!(
        run.ok(),
        "a locked store does not fail the play\n{}",
        run.log()
    );
    for host in ["kvm1", "kvm3"] {
        assert_eq!(run.of("timeout", host).status, "changed");
        assert_eq!(run.stores("timeout", host), all_stores("changed"));
    }
    let record = run.of("timeout", "kvm2");
    assert_eq!(record.status, "changed", "{:#}", record.result);
    let mut expected = all_stores("changed");
    expected.insert("b_VARS.fd".into(), "skipped".into());
    assert_eq!(run.stores("timeout", "kvm2"), expected);
    assert_eq!(record.result["locked"], Value::from(vec![s(&locked)]));
    assert_eq!(record.result["summary"]["skipped"], 1);
    let warnings = record.result["warnings"].to_string();
    assert!(warnings.contains("b_VARS.fd: locked"), "{warnings}");
    assert!(
        text(&run.output.stderr).contains("b_VARS.fd: locked"),
        "{}",
        run.log()
    );
    assert_eq!(fs::read(&locked).unwrap(), locked_bytes, "not touched");

    // Asked to: the host with the locked store fails, saying which store; the others are
    // done already.
    let strict = fleet.play(playbook, &["-e", "strict=true"]);
    assert!(
        !strict.ok(),
        "fail_on_locked fails the play\n{}",
        strict.log()
    );
    let record = strict.of("timeout", "kvm2");
    assert_eq!(record.status, "failed", "{:#}", record.result);
    let msg = record.result["msg"].as_str().unwrap();
    assert!(
        msg.contains("1 of 3 stores locked (strict)") && msg.contains(s(&locked)),
        "{msg}"
    );
    assert!(record.result["cmd"]
        .as_array()
        .unwrap()
        .contains(&Value::from("--strict")));
    for host in ["kvm1", "kvm3"] {
        assert_eq!(strict.of("timeout", host).status, "ok");
        assert_eq!(strict.stores("timeout", host), all_stores("unchanged"));
    }
    assert_eq!(fs::read(&locked).unwrap(), locked_bytes);

    // kvm3's stores were given by name, in that order, after `--`.
    let cmd = strict.of("timeout", "kvm3").result["cmd"].clone();
    let cmd: Vec<&str> = cmd
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let files = cmd
        .iter()
        .position(|a| *a == "--")
        .expect("-- before the files");
    assert_eq!(cmd[files + 1..].len(), 3, "{cmd:?}");
    assert!(cmd[files + 1].ends_with("kvm3/c_VARS.fd"), "{cmd:?}");
    assert!(!cmd.contains(&"--dir"), "{cmd:?}");

    // The VM stops 3 s after the run starts (the module runs within a second or two): with
    // `wait` the store is edited then, the others are left alone.
    let stop = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(3));
        drop(holder);
    });
    let run = fleet.play(playbook, &["-e", "wait=60"]);
    stop.join().unwrap();
    assert!(run.ok(), "{}", run.log());
    let mut expected = all_stores("unchanged");
    expected.insert("b_VARS.fd".into(), "changed".into());
    assert_eq!(run.stores("timeout", "kvm2"), expected, "{}", run.log());
    assert!(run.of("timeout", "kvm2").result["cmd"]
        .as_array()
        .unwrap()
        .contains(&Value::from("--wait=60")));
    assert_eq!(run.of("timeout", "kvm1").status, "ok");
    let get = nvram(&["get", s(&locked), "Timeout", "--hex"]);
    assert_eq!(text(&get.stdout).trim(), "0700");
}

/// A missing nvram (by name on PATH, by path), one too old, something that is not nvram, and
/// a store that is not a store: each host fails with a message that says what is wrong, the
/// other hosts are done.
#[test]
fn missing_old_or_wrong_nvram_and_failed_stores_fail_clearly() {
    let hosts = [
        "good",
        "not-on-path",
        "no-such-path",
        "too-old",
        "not-nvram",
        "bad-store",
    ];
    let mut fleet = Fleet::new(&hosts);
    let fakes = fleet.root().join("fakes");
    fs::create_dir(&fakes).unwrap();
    for (name, version) in [("old-nvram", "nvram 0.0.9"), ("other", "other 2.0")] {
        let path = fakes.join(name);
        fs::write(&path, format!("#!/bin/sh\necho '{version}'\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let executable = |host: &str| match host {
        "not-on-path" => "nvram".to_string(),
        "no-such-path" => s(&fleet.root().join("nowhere/nvram")).to_string(),
        "too-old" => s(&fakes.join("old-nvram")).to_string(),
        "not-nvram" => s(&fakes.join("other")).to_string(),
        _ => NVRAM.to_string(),
    };
    let vars: Vec<_> = hosts
        .iter()
        .map(|h| (h.to_string(), vec![("nvram".to_string(), executable(h))]))
        .collect();
    fleet.vars.extend(vars);
    fs::write(
        fleet.dir("bad-store").join("garbage_VARS.fd"),
        b"not a store",
    )
    .unwrap();
    fleet.set_env(
        "ANSIBLE_LIBRARY",
        s(&repo().join("ansible/plugins/modules")),
    );
    let playbook = fleet.playbook("timeout.yml", TIMEOUT_PLAYBOOK);

    let run = fleet.play(s(&playbook), &[]);
    assert!(!run.ok(), "{}", run.log());
    let msg = |host: &str| {
        let record = run.of("timeout", host);
        assert_eq!(record.status, "failed", "{host}: {:#}", record.result);
        record.result["msg"].as_str().unwrap().to_string()
    };
    let m = msg("not-on-path");
    assert!(
        m.contains("the nvram command was not found on this host")
            && m.contains("install nvram 0.1.0 or later"),
        "{m}"
    );
    let m = msg("no-such-path");
    assert!(m.contains("nowhere/nvram is not an executable file"), "{m}");
    let m = msg("too-old");
    assert!(
        m.contains("is nvram 0.0.9, too old") && m.contains("needs nvram 0.1.0 or later"),
        "{m}"
    );
    let m = msg("not-nvram");
    assert!(m.contains("did not print an nvram version"), "{m}");
    let m = msg("bad-store");
    assert!(
        m.contains("1 of 4 stores failed") && m.contains("garbage_VARS.fd"),
        "{m}"
    );
    // The failed store is reported with the others, which were edited all the same.
    let mut expected = all_stores("changed");
    expected.insert("garbage_VARS.fd".into(), "failed".into());
    assert_eq!(run.stores("timeout", "bad-store"), expected);
    assert_eq!(
        fs::read(fleet.dir("bad-store").join("garbage_VARS.fd")).unwrap(),
        b"not a store"
    );
    assert_eq!(run.of("timeout", "good").status, "changed");
    assert_eq!(run.stores("timeout", "good"), all_stores("changed"));
    // The hosts without a usable nvram were not touched.
    for host in ["not-on-path", "no-such-path", "too-old", "not-nvram"] {
        let bytes = fs::read(fleet.dir(host).join("a_VARS.fd")).unwrap();
        assert_eq!(bytes, fs::read(MS_TEMPLATE).unwrap(), "{host}");
    }
}

/// The module's options are `nvram apply`'s long options (snake case; `--json` and
/// `--dry-run` are the module's own business) plus `files` and `executable`; its
/// DOCUMENTATION declares exactly the options its argument spec has, with the same types,
/// choices and aliases; ansible-doc reads it both ways the module is found.
#[test]
fn module_options_are_applys_long_options() {
    let help = nvram(&["apply", "--help"]);
    let help = text(&help.stdout);
    let options = help
        .split_once("\nOptions:\n")
        .expect("apply --help has Options")
        .1;
    let mut expected: Vec<String> = options
        .lines()
        .filter_map(|line| {
            // Option lines are indented by 2 or 6 spaces, their descriptions by more.
            let indent = line.len() - line.trim_start().len();
            if indent > 6 {
                return None;
            }
            let line = line.trim_start();
            let line = match line.as_bytes() {
                [b'-', short, b',', b' ', ..] if short.is_ascii_alphabetic() => &line[4..],
                _ => line,
            };
            let name = line.strip_prefix("--")?;
            let end = name
                .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
                .unwrap_or(name.len());
            Some(name[..end].replace('-', "_"))
        })
        .filter(|name| !["help", "json", "dry_run"].contains(&name.as_str()))
        .collect();
    expected.extend(["files".into(), "executable".into()]);
    expected.sort();
    expected.dedup();
    assert!(
        expected.contains(&"add_microsoft_dbx".to_string()),
        "{expected:?}"
    );

    let script = r#"
import importlib.util, json, sys, yaml
spec = importlib.util.spec_from_file_location("nvram_apply", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
doc = yaml.safe_load(module.DOCUMENTATION)
yaml.safe_load(module.EXAMPLES)
yaml.safe_load(module.RETURN)
print(json.dumps(dict(spec=module.ARGUMENT_SPEC, doc=doc["options"])))
"#;
    let module = repo().join("ansible/plugins/modules/nvram_apply.py");
    let out = Command::new(ansible_bin("python3"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["-c", script])
        .arg(&module)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let both: Value = serde_json::from_slice(&out.stdout).unwrap();
    let spec = both["spec"].as_object().unwrap();
    let doc = both["doc"].as_object().unwrap();
    let mut names: Vec<String> = spec.keys().cloned().collect();
    names.sort();
    // `apply --libvirt` (with --connect, --domain, --all) is newer than `apply --json`: the
    // module has its options, an nvram without them refuses them (the task fails with
    // nvram's message).
    let libvirt = ["all", "connect", "domain", "libvirt"].map(String::from);
    let module_only: Vec<String> = names
        .iter()
        .filter(|n| !expected.contains(n))
        .cloned()
        .collect();
    if module_only == libvirt {
        expected.extend(libvirt);
        expected.sort();
    }
    assert_eq!(names, expected, "the module's options are apply's");
    let mut documented: Vec<String> = doc.keys().cloned().collect();
    documented.sort();
    assert_eq!(documented, expected, "DOCUMENTATION has every option");
    for (name, spec) in spec {
        let doc = &doc[name];
        for key in ["type", "elements", "choices", "aliases", "default"] {
            assert_eq!(spec.get(key), doc.get(key), "{name}: {key}");
        }
    }

    // ansible-doc finds and renders it both ways.
    let fleet = Fleet::new(&[]);
    let collections = fleet.root().join("collections/ansible_collections/nvram");
    fs::create_dir_all(&collections).unwrap();
    std::os::unix::fs::symlink(repo().join("ansible"), collections.join("fleet")).unwrap();
    for (var, value, name) in [
        (
            "ANSIBLE_COLLECTIONS_PATH",
            fleet.root().join("collections"),
            "nvram.fleet.nvram_apply",
        ),
        (
            "ANSIBLE_LIBRARY",
            repo().join("ansible/plugins/modules"),
            "nvram_apply",
        ),
    ] {
        let out = Command::new(ansible_bin("ansible-doc"))
            .env_clear()
            .envs(fleet.env.iter().map(|(k, v)| (k, v)))
            .env(var, &value)
            .args(["--json", name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let doc = &doc[name]["doc"];
        assert!(
            doc["options"]["add_microsoft_dbx"].is_object(),
            "{name}: {doc:#}"
        );
        assert_eq!(doc["options"]["strict"]["aliases"][0], "fail_on_locked");
    }
}
