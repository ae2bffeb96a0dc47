//! Crash and fault tests of every command that writes a file (`create`, `set`, `delete`,
//! `import`, `boot add`, `secureboot enroll`, `reset`, `prepare`, `apply`, `export -o`):
//!
//! - killed (SIGKILL) at random moments, the file holds its old content or its new one, byte
//!   for byte, and after `nvram clean` no temporary file is left;
//! - with a syscall failing (Debian's `strace -e inject=…`, on the syscalls the writers really
//!   make: every `fsync`, `linkat`, `renameat`, the first `write`, the `O_TMPFILE` `openat`),
//!   the command either fails with status 2 naming the file and leaves it unchanged, or
//!   (when only the directory fsync after the rename failed) exits 3 saying that the new
//!   content is in place but may not be durable; never is a temporary file left behind;
//! - on a filesystem without `O_TMPFILE` (simulated: that `openat` fails with EOPNOTSUPP), a
//!   killed writer leaves a `.NAME.nvram-….tmp` that `check` reports and `clean` removes;
//! - `--wait`: twenty concurrent `set --wait` of one file all succeed.
//!
//! Counts are printed (run with `--nocapture` to see them).

mod common;

use common::{nvram, nvram_ok, path_str as p, self_signed, stderr, stdout};
use rand::Rng;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use testkit::require_tool;

/// Kills of each writer at random moments.
const KILLS: usize = 6;

/// One writer: the command, the file it writes and that file's content before.
struct Case {
    name: &'static str,
    dir: tempfile::TempDir,
    /// The file the command writes.
    target: PathBuf,
    /// Other stores whose temporary files `clean` is asked to remove (a reset's backup).
    also_clean: Vec<PathBuf>,
    args: Vec<String>,
    /// `None`: the file does not exist before.
    old: Option<Vec<u8>>,
}

impl Case {
    fn new(name: &'static str, setup: impl FnOnce(&Path) -> (PathBuf, Vec<String>)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (target, args) = setup(dir.path());
        let old = fs::read(&target).ok();
        Self {
            name,
            dir,
            target,
            also_clean: Vec::new(),
            args,
            old,
        }
    }

    fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    /// Puts the target back as it was before the command (and drops backups).
    fn restore(&self) {
        match &self.old {
            Some(old) => fs::write(&self.target, old).unwrap(),
            None => {
                let _ = fs::remove_file(&self.target);
            }
        }
        for extra in &self.also_clean {
            let _ = fs::remove_file(extra);
        }
    }

    fn content(&self) -> Option<Vec<u8>> {
        fs::read(&self.target).ok()
    }

    /// The temporary files in the directory (any `.…tmp`).
    fn temps(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
            .collect();
        names.sort();
        names
    }

    fn clean(&self) {
        let mut args = vec!["clean".to_string(), p(&self.target).to_string()];
        args.extend(self.also_clean.iter().map(|f| p(f).to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nvram_ok(&args);
        assert_eq!(
            self.temps(),
            Vec::<String>::new(),
            "{}: after clean",
            self.name
        );
    }

    /// Runs the command once from the old state: its new content and how long it took.
    fn new_content(&self) -> (Vec<u8>, Duration) {
        self.restore();
        let started = Instant::now();
        nvram_ok(&self.args());
        let took = started.elapsed();
        let new = self.content().expect("the command wrote its file");
        assert_ne!(
            Some(&new),
            self.old.as_ref(),
            "{}: changes its file",
            self.name
        );
        self.restore();
        (new, took)
    }
}

/// A blank ovmf-4m store with the variables `names` (u8 1 each).
fn store_with(path: &Path, layout: &str, names: &[&str]) {
    nvram_ok(&["create", "--layout", layout, "--force", p(path)]);
    for name in names {
        nvram_ok(&["set", p(path), name, "--u8", "1"]);
    }
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Every writer, each in its own directory.
/// `big_set`: `set` edits a 64 MiB AAVMF store (the biggest write), else an ovmf-4m one.
fn cases(big_set: bool) -> Vec<Case> {
    let mut cases = vec![
        Case::new("create --force", |d| {
            let s = d.join("S.fd");
            store_with(&s, "ovmf-4m", &["Old"]);
            (
                s.clone(),
                owned(&["create", "--layout", "ovmf-4m", "--force", p(&s)]),
            )
        }),
        Case::new("create", |d| {
            let s = d.join("N.fd");
            (s.clone(), owned(&["create", "--layout", "ovmf-4m", p(&s)]))
        }),
        Case::new(
            if big_set {
                "set (aavmf, 64 MiB)"
            } else {
                "set"
            },
            |d| {
                let s = d.join("S.fd");
                store_with(&s, if big_set { "aavmf" } else { "ovmf-4m" }, &[]);
                (s.clone(), owned(&["set", p(&s), "Kill", "--u8", "1"]))
            },
        ),
        Case::new("delete", |d| {
            let s = d.join("S.fd");
            store_with(&s, "ovmf-4m", &["Doomed"]);
            (s.clone(), owned(&["delete", p(&s), "Doomed"]))
        }),
        Case::new("import", |d| {
            let s = d.join("S.fd");
            store_with(&s, "ovmf-4m", &[]);
            let json = d.join("vars.json");
            fs::write(
                &json,
                r#"{"version": 2, "variables": [
                    {"name": "A", "guid": "8be4df61-93ca-11d2-aa0d-00e098032b8c", "attr": 7, "data": "01"},
                    {"name": "B", "guid": "8be4df61-93ca-11d2-aa0d-00e098032b8c", "attr": 7, "data": "0203"}]}"#,
            )
            .unwrap();
            (s.clone(), owned(&["import", p(&s), "--json", p(&json)]))
        }),
        Case::new("boot add", |d| {
            let s = d.join("S.fd");
            store_with(&s, "ovmf-4m", &[]);
            let args = [
                "boot",
                "add",
                p(&s),
                "--description",
                "D",
                "--file",
                r"\EFI\X.EFI",
            ];
            (s.clone(), owned(&args))
        }),
        Case::new("secureboot enroll", |d| {
            let s = d.join("S.fd");
            store_with(&s, "ovmf-4m", &[]);
            let (_, pk) = self_signed(d, "pk", "Crash PK");
            (
                s.clone(),
                owned(&["secureboot", "enroll", p(&s), "--pk", p(&pk)]),
            )
        }),
        Case::new("reset", |d| {
            let s = d.join("S.fd");
            store_with(&s, "ovmf-4m", &["Old"]);
            let t = d.join("T.fd");
            store_with(&t, "ovmf-4m", &[]);
            (
                s.clone(),
                owned(&["reset", "--nvram", p(&s), "--template", p(&t)]),
            )
        }),
        Case::new("prepare", |d| {
            let s = d.join("N.fd");
            let t = d.join("T.fd");
            store_with(&t, "ovmf-4m", &[]);
            (
                s.clone(),
                owned(&["prepare", "--nvram", p(&s), "--template", p(&t)]),
            )
        }),
        Case::new("apply", |d| {
            let s = d.join("S.fd");
            store_with(&s, "ovmf-4m", &[]);
            (s.clone(), owned(&["apply", "--set", "Kill=u8:1", p(&s)]))
        }),
        Case::new("export -o", |d| {
            let s = d.join("S.fd");
            store_with(&s, "ovmf-4m", &["A"]);
            let out = d.join("out.json");
            fs::write(&out, b"old\n").unwrap();
            (
                out.clone(),
                owned(&["export", p(&s), "-o", p(&out), "--force"]),
            )
        }),
    ];
    let reset = cases.iter_mut().find(|c| c.name == "reset").unwrap();
    reset.also_clean = vec![PathBuf::from(format!("{}.bak", p(&reset.target)))];
    cases
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn every_writer_killed_at_random_leaves_the_old_or_the_new_file() {
    let mut rng = rand::thread_rng();
    let mut summary = Vec::new();
    for case in cases(true) {
        let (new, took) = case.new_content();
        let (mut olds, mut news, mut absent, mut leftovers) = (0, 0, 0, 0);
        for _ in 0..KILLS {
            case.restore();
            let mut child = Command::new(env!("CARGO_BIN_EXE_nvram"))
                .args(case.args())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let delay = rng.gen_range(0..=took.as_micros() as u64 * 6 / 5);
            std::thread::sleep(Duration::from_micros(delay));
            kill(&mut child);
            match case.content() {
                None if case.old.is_none() => absent += 1,
                Some(c) if Some(&c) == case.old.as_ref() => olds += 1,
                Some(c) if c == new => news += 1,
                other => panic!(
                    "{}: killed after {delay} µs, the file is neither old nor new ({:?} bytes)",
                    case.name,
                    other.map(|c| c.len())
                ),
            }
            leftovers += case.temps().len();
            case.clean();
        }
        summary.push(format!(
            "{}: {KILLS} kills (run {took:?}): {olds} old, {news} new, {absent} absent; {leftovers} temporary files left, removed by clean",
            case.name
        ));
    }
    eprintln!("{}", summary.join("\n"));
}

/// Killed (SIGKILL delivered by strace on entering the syscall) at each step of the write:
/// the first `write`, every `fsync`, the `linkat` and the `renameat`.
#[test]
fn every_writer_killed_at_each_step_leaves_the_old_or_the_new_file() {
    let mut summary = Vec::new();
    for case in cases(false) {
        let (new, _) = case.new_content();
        let counts = syscall_counts(&case);
        let mut points = vec!["write:signal=KILL:when=1".to_string()];
        for (call, n) in &counts {
            points.extend((1..=*n).map(|k| format!("{call}:signal=KILL:when={k}")));
        }
        let (mut olds, mut news, mut absent, mut left) = (0, 0, 0, 0);
        for point in &points {
            case.restore();
            let out = with_fault(point, None, &case.args());
            assert!(!out.status.success(), "{} {point}: not killed", case.name);
            match case.content() {
                None if case.old.is_none() => absent += 1,
                Some(c) if Some(&c) == case.old.as_ref() => olds += 1,
                Some(c) if c == new => news += 1,
                _ => panic!("{} killed on {point}: neither old nor new", case.name),
            }
            left += case.temps().len();
            case.clean();
        }
        summary.push(format!(
            "{}: killed at {} steps: {olds} old, {news} new, {absent} absent; {left} temporary files left, removed by clean",
            case.name,
            points.len()
        ));
    }
    eprintln!("{}", summary.join("\n"));
}

/// `strace -f -o /dev/null [-P PATH] -e inject=SPEC nvram ARGS`.
fn with_fault(spec: &str, path: Option<&Path>, args: &[&str]) -> Output {
    let mut command = Command::new(require_tool("strace"));
    command.args(["-f", "-o", "/dev/null"]);
    if let Some(path) = path {
        command.args(["-P", p(path)]);
    }
    command
        .args(["-e", &format!("inject={spec}"), "--"])
        .arg(env!("CARGO_BIN_EXE_nvram"))
        .args(args)
        .output()
        .unwrap()
}

/// How often each syscall of interest occurs in a successful run.
fn syscall_counts(case: &Case) -> std::collections::BTreeMap<&'static str, usize> {
    let trace = case.dir.path().join("trace.txt");
    case.restore();
    let out = Command::new(require_tool("strace"))
        .args(["-f", "-qq", "-o", p(&trace)])
        .args([
            "-e",
            "trace=fsync,fdatasync,linkat,renameat,renameat2,rename",
        ])
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_nvram"))
        .args(case.args())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}: {}", case.name, stderr(&out));
    let text = fs::read_to_string(&trace).unwrap();
    fs::remove_file(&trace).unwrap();
    case.restore();
    let mut counts = std::collections::BTreeMap::new();
    for call in [
        "fsync",
        "fdatasync",
        "linkat",
        "renameat",
        "renameat2",
        "rename",
    ] {
        let n = text
            .lines()
            .filter(|l| l.contains(&format!(" {call}(")) || l.starts_with(&format!("{call}(")))
            .count();
        if n > 0 {
            counts.insert(call, n);
        }
    }
    counts
}

#[test]
fn every_writer_with_a_failing_syscall_fails_cleanly_or_says_not_durable() {
    let mut summary = Vec::new();
    for case in cases(false) {
        let (new, _) = case.new_content();
        let counts = syscall_counts(&case);
        let fsyncs = counts.get("fsync").copied().unwrap_or(0);
        assert!(fsyncs >= 2, "{}: {counts:?}", case.name);
        let name = case
            .target
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mut faults: Vec<(String, Option<PathBuf>)> = (1..=fsyncs)
            .map(|k| (format!("fsync:error=EIO:when={k}"), None))
            .collect();
        for call in ["linkat", "renameat", "renameat2", "rename"] {
            if counts.contains_key(call) {
                faults.push((format!("{call}:error=EIO"), None));
            }
        }
        faults.push(("write:error=ENOSPC:when=1".into(), None));
        // The O_TMPFILE open names the directory.
        faults.push((
            "openat:error=EACCES:when=1".into(),
            Some(case.dir.path().to_path_buf()),
        ));
        let (mut failed, mut not_durable) = (0, 0);
        for (spec, path) in &faults {
            case.restore();
            let out = with_fault(spec, path.as_deref(), &case.args());
            // apply reports per file on stdout and exits 1 when a file failed.
            let err = stderr(&out) + &stdout(&out);
            let content = case.content();
            let what = format!("{} with {spec}: {err}", case.name);
            let failure = if case.name == "apply" { 1 } else { 2 };
            match out.status.code() {
                Some(code) if code == failure => {
                    failed += 1;
                    assert_eq!(content, case.old, "{what}: changed");
                }
                Some(3) => {
                    not_durable += 1;
                    assert!(err.contains("may not be durable"), "{what}");
                    assert!(
                        content == case.old || content.as_ref() == Some(&new),
                        "{what}"
                    );
                }
                other => panic!("{what}: exit status {other:?}"),
            }
            // strace counts `when` per thread: apply's main thread then fails to print the
            // result line (which names the file) with the same injected error.
            if !err.contains("cannot write to standard output") {
                assert!(err.contains(&name), "{what}: the message names the file");
            }
            // The last fsync is the directory's after the target took its name.
            if spec == &format!("fsync:error=EIO:when={fsyncs}") {
                assert_eq!(out.status.code(), Some(3), "{what}");
                assert_eq!(content.as_ref(), Some(&new), "{what}");
                if case.name == "apply" {
                    assert!(stdout(&out).starts_with("changed-not-durable "), "{what}");
                }
            }
            assert_eq!(case.temps(), Vec::<String>::new(), "{what}: temporary left");
        }
        summary.push(format!(
            "{}: {} faults ({counts:?}): {failed} exit 2 unchanged, {not_durable} exit 3 not durable",
            case.name,
            faults.len()
        ));
    }
    eprintln!("{}", summary.join("\n"));
}

/// The position of the `O_TMPFILE` `openat` among the `openat`s of a run of `args`, for
/// `inject=openat:…:when=N` (strace counts per thread; these writers write from the main one).
fn tmpfile_openat(dir: &Path, args: &[&str]) -> usize {
    let trace = dir.join("trace.txt");
    let out = Command::new(require_tool("strace"))
        .args(["-qq", "-o", p(&trace), "-e", "trace=openat", "--"])
        .arg(env!("CARGO_BIN_EXE_nvram"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = fs::read_to_string(&trace).unwrap();
    fs::remove_file(&trace).unwrap();
    1 + text
        .lines()
        .position(|l| l.contains("O_TMPFILE"))
        .expect("an O_TMPFILE openat")
}

/// Without O_TMPFILE (simulated: that `openat` fails with EOPNOTSUPP, as on a filesystem
/// without it) the new file has a random name while it is written: a writer killed then
/// leaves it (the reproduction: 57 of 253 killed edits left one), `check` warns about it,
/// `clean` or the next successful edit removes it; and pre-created names of the old
/// predictable scheme do not stop a write.
#[test]
fn without_o_tmpfile_killed_writers_leave_random_names_that_check_reports_and_clean_removes() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("S.fd");
    store_with(&s, "ovmf-4m", &[]);
    let old = fs::read(&s).unwrap();
    let temps = || -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        names.sort();
        names
    };
    let args = ["set", p(&s), "Kill", "--u8", "1"];
    let n = tmpfile_openat(dir.path(), &args);
    fs::write(&s, &old).unwrap();
    let no_tmpfile = format!("inject=openat:error=EOPNOTSUPP:when={n}");
    // A run without O_TMPFILE works and leaves nothing.
    let out = Command::new(require_tool("strace"))
        .args(["-f", "-o", "/dev/null", "-e", &no_tmpfile, "--"])
        .arg(env!("CARGO_BIN_EXE_nvram"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let new = fs::read(&s).unwrap();
    assert_ne!(new, old);
    assert_eq!(
        temps(),
        Vec::<String>::new(),
        "a finished run leaves nothing"
    );

    let mut left = 0;
    // Killed (SIGKILL delivered by strace) on writing the temporary file, on its fsync, on
    // the rename, on the directory's fsync.
    let points = [
        "write:signal=KILL:when=1",
        "fsync:signal=KILL:when=1",
        "renameat:signal=KILL:when=1",
        "fsync:signal=KILL:when=2",
    ];
    for point in points {
        fs::write(&s, &old).unwrap();
        let out = Command::new(require_tool("strace"))
            .args(["-f", "-o", "/dev/null", "-e", &no_tmpfile])
            .args(["-e", &format!("inject={point}"), "--"])
            .arg(env!("CARGO_BIN_EXE_nvram"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: killed");
        let now = fs::read(&s).unwrap();
        assert!(now == old || now == new, "{point}: neither old nor new");
        let found = temps();
        left += found.len();
        for name in &found {
            assert!(
                safefile::is_temp_name("S.fd".as_ref(), name.as_ref())
                    && name.starts_with(".S.fd.nvram-"),
                "{point}: {name}: not a random temporary name of S.fd"
            );
        }
        if point.starts_with("write") || point.starts_with("fsync:signal=KILL:when=1") {
            assert_eq!(now, old, "{point}");
            assert_eq!(
                found.len(),
                1,
                "{point}: the killed writer's temporary file is left"
            );
            let check = nvram(&["check", p(&s)]);
            assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
            assert!(stdout(&check).contains(&found[0]), "{}", stdout(&check));
            assert!(stdout(&check).contains("nvram clean"), "{}", stdout(&check));
            let json: serde_json::Value =
                serde_json::from_slice(&nvram_ok(&["check", "--json", p(&s)]).stdout).unwrap();
            assert_eq!(json["temp_files"].as_array().unwrap().len(), 1);
        }
        if point.starts_with("renameat") {
            // The next successful edit removes what a killed one left.
            nvram_ok(&["set", p(&s), "Next", "--u8", "1"]);
            assert_eq!(
                temps(),
                Vec::<String>::new(),
                "{point}: after the next edit"
            );
            continue;
        }
        let clean = nvram_ok(&["clean", p(&s)]);
        assert_eq!(stdout(&clean).matches("removed ").count(), found.len());
        assert_eq!(temps(), Vec::<String>::new(), "{point}: after clean");
    }
    eprintln!(
        "no O_TMPFILE: set killed at {} points: {left} temporary files left, all removed by clean or the next edit",
        points.len()
    );

    // The old scheme's names (.S.fd.PID-N.tmp) are no obstacle: pre-create the next ones.
    let last: u32 = fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1);
    for pid in last + 1..last + 200 {
        fs::write(dir.path().join(format!(".S.fd.{pid}-0.tmp")), b"").unwrap();
    }
    nvram_ok(&["set", p(&s), "After", "--u8", "1"]);
    // ... and that successful edit removed them.
    assert_eq!(temps(), Vec::<String>::new(), "old-style leftovers too");
}

#[test]
fn clean_leaves_the_temporaries_of_a_locked_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("S.fd");
    store_with(&s, "ovmf-4m", &[]);
    let temp = dir.path().join(".S.fd.nvram-0123456789abcdef.tmp");
    fs::write(&temp, b"left").unwrap();
    let holder = fs::File::open(&s).unwrap();
    rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockShared).unwrap();
    let out = nvram(&["clean", p(&s)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));
    assert!(temp.exists());
    drop(holder);
    let out = nvram_ok(&["clean", p(&s)]);
    assert!(stdout(&out).contains(".S.fd.nvram-0123456789abcdef.tmp"));
    assert!(!temp.exists());
}

#[test]
fn twenty_concurrent_sets_with_wait_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("S.fd");
    store_with(&s, "ovmf-4m", &[]);
    let children: Vec<Child> = (0..20)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_nvram"))
                .args(["set", "--wait", p(&s), &format!("Var{i}"), "--u8", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let list = stdout(&nvram_ok(&["list", p(&s)]));
    for i in 0..20 {
        assert!(
            list.contains(&format!("Var{i} ")),
            "Var{i} missing:\n{list}"
        );
    }
}

#[test]
fn wait_with_seconds_gives_up_and_bare_wait_waits() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("S.fd");
    store_with(&s, "ovmf-4m", &[]);
    let holder = fs::File::open(&s).unwrap();
    rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockShared).unwrap();
    let out = nvram(&["set", p(&s), "X", "--u8", "1"]);
    assert_eq!(out.status.code(), Some(2), "no --wait: fails at once");
    let started = Instant::now();
    let out = nvram(&["set", "--wait=0.3", p(&s), "X", "--u8", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Released while a bare --wait waits.
    let waiter = Command::new(env!("CARGO_BIN_EXE_nvram"))
        .args(["--wait", "set", p(&s), "X", "--u8", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(holder);
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // A POSIX (QEMU-like) lock is polled too.
    let qemu = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&s)
        .unwrap();
    rustix::fs::fcntl_lock(&qemu, rustix::fs::FlockOperation::LockShared).unwrap();
    let out = nvram(&["set", "--wait=0.2", p(&s), "Y", "--u8", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn apply_reports_a_file_whose_directory_fsync_failed_as_changed_not_durable() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("S.fd");
    store_with(&s, "ovmf-4m", &[]);
    let out = with_fault(
        "fsync:error=EIO:when=2",
        None,
        &["apply", "--json", "--set", "Late=u8:1", p(&s)],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["result"], "changed-not-durable");
    let detail = json[0]["detail"].as_str().unwrap();
    assert!(detail.contains("Late: added"), "{detail}");
    assert!(detail.contains("may not be durable"), "{detail}");
    assert!(
        stderr(&out).contains("1 changed but not durable"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("failed … 0 changed"));
    assert!(stdout(&nvram_ok(&["list", p(&s)])).contains("Late"));
}
