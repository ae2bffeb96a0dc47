//! No hang and no unbounded read on any input (issue 14): every path the command reads is
//! opened without blocking, refused at once if it is a FIFO, a character device, a directory
//! or a socket, and read only up to a limit. Each case runs the binary under a watchdog that
//! kills it after 10 s and fails the test.

mod common;

use common::path_str;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a watched run gave: exit status and stderr.
struct Run {
    code: Option<i32>,
    stderr: String,
    elapsed: Duration,
}

/// Runs `nvram args` with `stdin` (empty if `None`), killing it and failing after 10 s.
fn run_with(args: &[&str], stdin: Option<fs::File>, env: &[(&str, &Path)]) -> Run {
    let start = Instant::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_nvram"));
    command
        .args(args)
        .stdin(stdin.map_or_else(Stdio::null, Stdio::from))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("run nvram");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut text).unwrap();
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("nvram {args:?} still runs after 10 s: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    Run {
        code: status.code(),
        stderr,
        elapsed: start.elapsed(),
    }
}

fn run(args: &[&str]) -> Run {
    run_with(args, None, &[])
}

/// Asserts that `nvram args` failed with status 2, quickly, with a message containing every
/// one of `needles`.
#[track_caller]
fn refused(args: &[&str], needles: &[&str]) -> String {
    refused_run(run(args), args, needles)
}

#[track_caller]
fn refused_run(out: Run, args: &[&str], needles: &[&str]) -> String {
    assert_eq!(out.code, Some(2), "nvram {args:?}: {}", out.stderr);
    assert!(
        out.elapsed < Duration::from_secs(5),
        "nvram {args:?} took {:?}",
        out.elapsed
    );
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "nvram {args:?}: {needle:?} not in {}",
            out.stderr
        );
    }
    out.stderr
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

/// A sparse file of `len` bytes starting with `head`: big, but costs no disk and no time.
fn sparse(path: &Path, head: &[u8], len: u64) {
    let mut file = fs::File::create(path).unwrap();
    file.write_all(head).unwrap();
    file.set_len(len).unwrap();
}

struct Setup {
    dir: tempfile::TempDir,
    vm: PathBuf,
    before: Vec<u8>,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let vm = dir.path().join("vm.fd");
        common::nvram_ok(&["create", path_str(&vm)]);
        let before = fs::read(&vm).unwrap();
        Self { dir, vm, before }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn fifo(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        mkfifo(&path);
        path
    }

    fn vm(&self) -> &str {
        path_str(&self.vm)
    }

    #[track_caller]
    fn unchanged(&self) {
        assert!(
            fs::read(&self.vm).unwrap() == self.before,
            "{} changed",
            self.vm.display()
        );
    }
}

#[test]
fn a_fifo_as_the_store_is_refused_at_once_by_every_reader() {
    let s = Setup::new();
    let fifo = s.fifo("f.fd");
    let f = path_str(&fifo);
    let message = format!("{f}: is a FIFO (named pipe)");
    let empty = s.path("empty.json");
    fs::write(&empty, r#"{"version": 2, "variables": []}"#).unwrap();
    for args in [
        vec!["list", f],
        vec!["check", f],
        vec!["export", f],
        vec!["get", f, "BootOrder"],
        vec!["boot", "list", f],
        vec!["secureboot", "status", f],
        vec!["prepare", "--nvram", f, "--template", s.vm()],
        vec!["prepare", "--nvram", f, "--template", s.vm(), "--incoming"],
        vec!["prepare", "--nvram", s.vm(), "--template", f],
        vec!["reset", "--nvram", s.vm(), "--template", f],
        vec!["set", f, "X", "--u8", "1"],
        vec!["delete", f, "X"],
        vec!["import", f, "--json", path_str(&empty)],
    ] {
        refused(&args, &[&message]);
        s.unchanged();
    }
}

#[test]
fn a_fifo_as_an_input_file_is_refused_at_once() {
    let s = Setup::new();
    let fifo = s.fifo("input");
    let f = path_str(&fifo);
    let message = format!("{f}: is a FIFO (named pipe)");
    for args in [
        vec!["set", s.vm(), "X", "--data-file", f],
        vec!["import", s.vm(), "--json", f],
        vec!["secureboot", "enroll", s.vm(), "--pk", f],
        vec!["secureboot", "add-db", s.vm(), f],
        vec!["secureboot", "add-kek", s.vm(), f],
        vec!["secureboot", "add-dbx", s.vm(), f],
        vec!["apply", "--import", f, s.vm()],
        vec!["apply", "--set", &format!("X=file:{f}"), s.vm()],
        vec!["apply", "--enroll-pk", f, s.vm()],
        vec!["apply", "--add-db", f, s.vm()],
        vec!["apply", "--files-from", f, "--delete", "X"],
    ] {
        refused(&args, &[&message]);
        s.unchanged();
    }
}

#[test]
fn a_fifo_as_a_later_certificate_is_refused_at_once() {
    let s = Setup::new();
    let (_, cert) = common::self_signed(s.dir.path(), "pk", "Test PK");
    let fifo = s.fifo("kek.pem");
    let f = path_str(&fifo);
    let message = format!("{f}: is a FIFO (named pipe)");
    let pk = path_str(&cert);
    for args in [
        vec!["secureboot", "enroll", s.vm(), "--pk", pk, "--kek", f],
        vec!["secureboot", "enroll", s.vm(), "--pk", pk, "--db", f],
        vec!["secureboot", "enroll", s.vm(), "--pk", pk, "--dbx", f],
        vec!["apply", "--enroll-pk", pk, "--enroll-kek", f, s.vm()],
        vec!["apply", "--enroll-pk", pk, "--enroll-dbx", f, s.vm()],
    ] {
        refused(&args, &[&message]);
        s.unchanged();
    }
}

#[test]
fn flash_replay_refuses_a_fifo_as_trace_or_image() {
    let s = Setup::new();
    let fifo = s.fifo("trace.txt");
    let f = path_str(&fifo);
    let trace = s.path("ok.txt");
    fs::write(&trace, "X\n").unwrap();
    refused(
        &["flash", "replay", "--image", s.vm(), "--trace", f],
        &[&format!("{f}: is a FIFO (named pipe)")],
    );
    let image = s.fifo("image.fd");
    let image = path_str(&image);
    for preset in ["q35", "virt"] {
        refused(
            &[
                "flash",
                "replay",
                "--image",
                image,
                "--preset",
                preset,
                "--trace",
                path_str(&trace),
            ],
            &[&format!("{image}: is a FIFO (named pipe)")],
        );
    }
    s.unchanged();
}

#[test]
fn a_fifo_among_firmware_descriptors_is_skipped_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    mkfifo(&dir.path().join("50-fifo.json"));
    let out = run_with(
        &["firmware", "list"],
        None,
        &[("NVRAM_FIRMWARE_DIRS", dir.path())],
    );
    assert!(out.elapsed < Duration::from_secs(5), "{:?}", out.elapsed);
    assert!(
        out.stderr.contains("50-fifo.json: skipped"),
        "{}",
        out.stderr
    );
}

#[test]
fn dev_zero_is_refused_as_a_character_device() {
    let s = Setup::new();
    for args in [
        vec!["import", s.vm(), "--json", "/dev/zero"],
        vec!["apply", "--files-from", "/dev/zero", "--delete", "X"],
        vec!["apply", "--import", "/dev/zero", s.vm()],
        vec!["set", s.vm(), "X", "--data-file", "/dev/zero"],
        vec!["secureboot", "add-db", s.vm(), "/dev/zero"],
        vec!["list", "/dev/zero"],
        vec!["flash", "replay", "--image", s.vm(), "--trace", "/dev/zero"],
    ] {
        refused(&args, &["/dev/zero: is a character device"]);
        s.unchanged();
    }
}

#[test]
fn an_endless_file_list_on_stdin_is_cut_at_the_limit() {
    let out = run_with(
        &["apply", "--files-from", "-", "--delete", "X"],
        Some(fs::File::open("/dev/zero").unwrap()),
        &[],
    );
    refused_run(
        out,
        &["apply", "--files-from", "-"],
        &["too large for a list of files: more than 16777216 bytes"],
    );
}

#[test]
fn inputs_over_their_limit_are_refused_before_they_are_read() {
    let s = Setup::new();
    // 200 MB of JSON whose data field would be parsed and hex-decoded whole.
    let json = s.path("big.json");
    sparse(
        &json,
        br#"{"version": 2, "variables": [{"name": "X", "guid": "8be4df61-93ca-11d2-aa0d-00e098032b8c", "attr": 7, "data": ""#,
        200 << 20,
    );
    let j = path_str(&json);
    let limit = "too large for a JSON variable list: more than 16777216 bytes";
    refused(&["import", s.vm(), "--json", j], &[j, limit]);
    refused(&["apply", "--import", j, s.vm()], &[j, limit]);

    let data = s.path("data.bin");
    sparse(&data, b"", 2 << 20);
    let d = path_str(&data);
    refused(
        &["set", s.vm(), "X", "--data-file", d],
        &[d, "too large for variable data: more than 1048576 bytes"],
    );

    let cert = s.path("cert.pem");
    sparse(&cert, b"", 8 << 20);
    let c = path_str(&cert);
    let limit =
        "too large for a certificate, signature list or .auth file: more than 4194304 bytes";
    refused(&["secureboot", "add-db", s.vm(), c], &[c, limit]);
    refused(&["secureboot", "enroll", s.vm(), "--pk", c], &[c, limit]);

    let list = s.path("files.txt");
    sparse(&list, b"", 1 << 30);
    let l = path_str(&list);
    refused(
        &["apply", "--files-from", l, "--delete", "X"],
        &[l, "too large for a list of files: more than 16777216 bytes"],
    );

    let store = s.path("huge.fd");
    sparse(&store, b"", 65 << 20);
    let h = path_str(&store);
    let limit = "too large for a variable store: more than 67108864 bytes";
    refused(&["list", h], &[h, limit]);
    refused(
        &["prepare", "--nvram", s.vm(), "--template", h],
        &[h, limit],
    );

    let trace = s.path("huge.txt");
    sparse(&trace, b"", 300 << 20);
    let t = path_str(&trace);
    refused(
        &["flash", "replay", "--image", s.vm(), "--trace", t],
        &[t, "too large for a trace: more than 268435456 bytes"],
    );
    s.unchanged();
}

#[test]
fn an_xz_trace_bomb_is_refused_at_the_limit() {
    let s = Setup::new();
    // 300 MiB of one trace line, compressed by xz into some 45 KB.
    let bomb = s.path("bomb.txt.xz");
    let mut xz = Command::new(testkit::require_tool("xz"))
        .args(["-0", "-T1", "-c"])
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&bomb).unwrap())
        .spawn()
        .unwrap();
    {
        let mut stdin = xz.stdin.take().unwrap();
        let chunk = "R 0x0 1 0x0\n".repeat(1 << 16);
        let mut written = 0u64;
        while written < 300 << 20 {
            stdin.write_all(chunk.as_bytes()).unwrap();
            written += chunk.len() as u64;
        }
    }
    assert!(xz.wait().unwrap().success());
    assert!(fs::metadata(&bomb).unwrap().len() < 1 << 20);
    let b = path_str(&bomb);
    refused(
        &["flash", "replay", "--image", s.vm(), "--trace", b],
        &[
            b,
            "too large for a trace: decompresses to more than 268435456 bytes",
        ],
    );
    s.unchanged();
}

#[test]
fn a_huge_name_or_value_makes_a_short_message() {
    let s = Setup::new();
    let huge = "N".repeat(10 << 20);
    let guid = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
    let cases = [
        // The name reaches the editor, which refuses it.
        format!(
            r#"{{"variables": [{{"name": "{huge}", "guid": "{guid}", "attr": 7, "data": "01"}}]}}"#
        ),
        // A malformed field of a variable with that name.
        format!(r#"{{"variables": [{{"name": "{huge}", "guid": "x", "attr": 7, "data": "01"}}]}}"#),
        // A value of the wrong type, which serde_json quotes.
        format!(
            r#"{{"variables": [{{"name": "X", "guid": "{guid}", "attr": "{huge}", "data": "01"}}]}}"#
        ),
        // A bad GUID of that size.
        format!(r#"{{"variables": [{{"name": "X", "guid": "{huge}", "attr": 7, "data": "01"}}]}}"#),
    ];
    for (i, json) in cases.iter().enumerate() {
        let path = s.path(&format!("huge{i}.json"));
        fs::write(&path, json).unwrap();
        let p = path_str(&path);
        let message = refused(&["import", s.vm(), "--json", p], &[p]);
        assert!(
            message.len() < 2000,
            "case {i}: a {} byte message: {}…",
            message.len(),
            &message[..300]
        );
        s.unchanged();
    }
}
