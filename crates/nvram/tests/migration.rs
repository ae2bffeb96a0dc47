//! `nvram flash replay --migrate-at N --to ADDR` and `nvram flash incoming`: two processes
//! migrate the flash in the middle of a trace, over TCP loopback and unix sockets, and the
//! destination's image must end exactly as an uninterrupted replay leaves it. Refused and
//! killed migrations leave both images consistent.

mod common;

use common::path_str as s;
use pflash::{Geometry, NoEvents, NoStorage, Pflash};
use pflash_trace::{parse_trace, read_trace_file, replay, TraceLine, TraceOp};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

fn nvram() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nvram"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The content after replaying `lines` from `initial` in memory.
fn replayed(initial: &[u8], lines: &[TraceLine]) -> Vec<u8> {
    let g = Geometry::q35(initial.len() as u64).unwrap();
    let mut dev: Pflash = Pflash::new(g, initial.to_vec(), NoStorage, NoEvents).unwrap();
    replay(&mut dev, lines).unwrap();
    dev.into_parts().0
}

/// A started `nvram flash incoming` and the address it announced.
struct Destination {
    child: Child,
    address: String,
    stdout: BufReader<ChildStdout>,
}

fn start_destination(listen: &str, image: &Path, then: Option<(&Path, usize)>) -> Destination {
    start_destination_with(listen, image, then, &[])
}

/// [`start_destination`] with more arguments (`--compat`, `--accept-compat-mismatch`).
fn start_destination_with(
    listen: &str,
    image: &Path,
    then: Option<(&Path, usize)>,
    extra: &[&str],
) -> Destination {
    let mut cmd = nvram();
    cmd.args(["flash", "incoming", "--listen", listen, "--image", s(image)])
        .args(["--timeout", "30"])
        .args(extra);
    if let Some((trace, from)) = then {
        cmd.args(["--then-replay", s(trace), "--from-line", &from.to_string()]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("no address announced: {line:?}"))
        .to_owned();
    Destination {
        child,
        address,
        stdout,
    }
}

impl Destination {
    fn finish(mut self) -> (Output, String) {
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let out = self.child.wait_with_output().unwrap();
        (out, rest)
    }
}

fn source(image: &Path, trace: &Path, at: usize, to: &str) -> Command {
    let mut cmd = nvram();
    cmd.args(["flash", "replay", "--image", s(image), "--trace", s(trace)])
        .args(["--migrate-at", &at.to_string(), "--to", to]);
    cmd
}

/// Migrates at line `at` from a copy of `before` to a zeroed image of the same size, the
/// destination continuing the trace; checks both images.
fn migrate_once(
    dir: &Path,
    before: &[u8],
    expected: &[u8],
    trace: &Path,
    lines: &[TraceLine],
    at: usize,
    unix: bool,
) {
    let src = dir.join("src.fd");
    let dst = dir.join("dst.fd");
    fs::write(&src, before).unwrap();
    // Like libvirt for an incoming VM: only the size of the destination's file matters.
    fs::write(&dst, vec![0u8; before.len()]).unwrap();
    let listen = if unix {
        format!("unix:{}", dir.join("m.sock").display())
    } else {
        "tcp:127.0.0.1:0".to_owned()
    };
    let dest = start_destination(&listen, &dst, Some((trace, at)));
    let out = source(&src, trace, at, &dest.address).output().unwrap();
    let (dout, _) = dest.finish();
    assert!(
        out.status.success(),
        "source at {at}: {}",
        text(&out.stderr)
    );
    assert!(
        dout.status.success(),
        "destination at {at}: {}",
        text(&dout.stderr)
    );
    assert!(
        text(&out.stdout).contains(&format!("migrated after line {at} to {}", &listen[..4])),
        "{}",
        text(&out.stdout)
    );
    let upto = at.min(lines.len());
    assert!(
        fs::read(&src).unwrap() == replayed(before, &lines[..upto]),
        "the source's image is not at line {at}"
    );
    assert!(
        fs::read(&dst).unwrap() == expected,
        "migrating at line {at} changed the result"
    );
}

#[test]
fn the_boot_migrated_between_processes_at_many_lines_ends_as_qemu_left_it() {
    let dir = tempfile::tempdir().unwrap();
    let trace = testkit::trace_data("ovmf-boot-ops.txt.xz");
    let lines = read_trace_file(&trace).unwrap();
    let before = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz"));
    let after = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-after.fd.xz"));
    assert!(replayed(&before, &lines) == after);
    // The probe (1..5), inside a program sequence, spread over the boot, the last line.
    let points = [
        1,
        3,
        4,
        6,
        7,
        1000,
        9_001,
        17_777,
        25_000,
        32_914,
        lines.len(),
    ];
    for (i, at) in points.into_iter().enumerate() {
        migrate_once(dir.path(), &before, &after, &trace, &lines, at, i % 2 == 1);
    }
}

#[test]
fn the_reclaim_trace_migrated_at_erases_ends_as_qemu_left_it() {
    let dir = tempfile::tempdir().unwrap();
    let trace = testkit::trace_data("ovmf-2m-reclaim-ops.txt.xz");
    let lines = read_trace_file(&trace).unwrap();
    let before = testkit::unxz(&testkit::trace_data("ovmf-2m-reclaim-before.fd.xz"));
    let after = testkit::unxz(&testkit::trace_data("ovmf-2m-reclaim-after.fd.xz"));
    assert!(replayed(&before, &lines) == after);
    let erase = lines
        .iter()
        .filter(|l| matches!(l.op, Some(TraceOp::Write { value: 0x20, .. })))
        .nth(20)
        .unwrap()
        .line;
    // Between an erase and its confirm, right after the confirm, and elsewhere.
    for (i, at) in [erase, erase + 1, lines.len() / 3].into_iter().enumerate() {
        migrate_once(dir.path(), &before, &after, &trace, &lines, at, i % 2 == 0);
    }
}

/// A trace that passes through the buffered write, erase, status, query and ID modes, with
/// the marked lines to migrate at; read values come from an uninterrupted device.
fn modes_trace(initial: &[u8]) -> (String, Vec<usize>) {
    let ops = [
        ("X", false),
        ("W 0x10 1 0x50", false),
        ("W 0x10 1 0x70", true), // status mode
        ("R 0x10 1", false),
        ("W 0x10 1 0xff", false),
        ("W 0x2010 1 0x20", true), // erased, confirm pending
        ("W 0x2010 1 0xd0", false),
        ("W 0 1 0xff", false),
        ("W 0x3000 1 0xe8", true), // buffered write: count pending
        ("W 0x3000 1 0x3", true),  // data pending
        ("W 0x3000 1 0xa0", true), // in the middle of the data
        ("W 0x3001 1 0xa1", false),
        ("W 0x3002 1 0xa2", false),
        ("W 0x3003 1 0xa3", true), // confirm pending
        ("W 0x3000 1 0xd0", false),
        ("R 0x3000 1", false),
        ("W 0 1 0xff", false),
        ("R 0x3000 4", false),
        ("W 0 1 0x98", true), // CFI query
        ("R 0x10 1", false),
        ("R 0x2c 1", false),
        ("W 0 1 0xff", false),
        ("W 0 1 0x90", true), // read ID
        ("R 0 1", false),
        ("W 0 1 0xff", false),
        ("W 0x500 1 0x10", true), // program: data pending
        ("W 0x500 1 0x33", false),
        ("W 0x500 1 0xff", false),
        ("R 0x500 1", false),
    ];
    let g = Geometry::q35(initial.len() as u64).unwrap();
    let mut reference: Pflash = Pflash::new(g, initial.to_vec(), NoStorage, NoEvents).unwrap();
    let mut out = String::from("# migration modes\n");
    let mut points = Vec::new();
    for (op, mark) in ops {
        if op.starts_with('R') {
            let mut f = op.split_whitespace().skip(1);
            let offset =
                u64::from_str_radix(f.next().unwrap().trim_start_matches("0x"), 16).unwrap();
            let size: usize = f.next().unwrap().parse().unwrap();
            let mut buf = [0u8; 8];
            reference.read(offset, &mut buf[..size]);
            let _ = writeln!(out, "{op} {:#x}", u64::from_le_bytes(buf));
        } else {
            replay(&mut reference, &parse_trace(op).unwrap()).unwrap();
            let _ = writeln!(out, "{op}");
        }
        if mark {
            points.push(out.lines().count());
        }
    }
    (out, points)
}

#[test]
fn migrating_in_the_middle_of_command_sequences_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let before = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz"));
    let (text, points) = modes_trace(&before);
    let trace = dir.path().join("modes.txt");
    fs::write(&trace, &text).unwrap();
    let lines = parse_trace(&text).unwrap();
    let expected = replayed(&before, &lines);
    assert_eq!(points.len(), 9);
    for (i, &at) in points.iter().enumerate() {
        migrate_once(
            dir.path(),
            &before,
            &expected,
            &trace,
            &lines,
            at,
            i % 2 == 0,
        );
    }
}

#[test]
fn a_size_mismatch_fails_on_both_sides_leaving_both_images_intact() {
    let dir = tempfile::tempdir().unwrap();
    let trace = testkit::trace_data("ovmf-boot-ops.txt.xz");
    let lines = read_trace_file(&trace).unwrap();
    let before = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz"));
    let src = dir.path().join("src.fd");
    let at = 5000;
    for (len, hex) in [(131_072usize, "0x20000"), (540_672 + 4096, "0x85000")] {
        fs::write(&src, &before).unwrap();
        let dst = dir.path().join(format!("dst-{len}.fd"));
        let template: Vec<u8> = (0..len).map(|i| i as u8).collect();
        fs::write(&dst, &template).unwrap();
        let dest = start_destination("tcp:127.0.0.1:0", &dst, None);
        let out = source(&src, &trace, at, &dest.address).output().unwrap();
        let (dout, _) = dest.finish();
        let expected = format!(
            "size mismatch for {}: the incoming flash is 0x84000 (540672) bytes, the local \
             flash is {hex} ({len}) bytes",
            dst.display()
        );
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(dout.status.code(), Some(2));
        let (serr, derr) = (text(&out.stderr), text(&dout.stderr));
        assert!(serr.contains(&expected), "source: {serr}");
        assert!(
            serr.contains("the destination refused the migration"),
            "{serr}"
        );
        assert!(derr.contains(&expected), "destination: {derr}");
        assert!(
            fs::read(&dst).unwrap() == template,
            "destination file touched"
        );
        assert!(fs::read(&src).unwrap() == replayed(&before, &lines[..at]));
    }
}

/// A source replaying with `--compat qemu-7.2` and a destination with the default
/// `qemu-10.0`: both fail naming both compatibilities, and both images stay as they were;
/// with `--accept-compat-mismatch` the same migration goes through and the destination
/// finishes the trace as QEMU left it (the boot trace has no buffered write, the only
/// command whose behaviour differs).
#[test]
fn a_compat_mismatch_fails_on_both_sides_unless_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let trace = testkit::trace_data("ovmf-boot-ops.txt.xz");
    let lines = read_trace_file(&trace).unwrap();
    let before = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz"));
    let after = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-after.fd.xz"));
    let (src, dst) = (dir.path().join("src.fd"), dir.path().join("dst.fd"));
    let at = 5000;
    fs::write(&src, &before).unwrap();
    let template: Vec<u8> = (0..before.len()).map(|i| i as u8).collect();
    fs::write(&dst, &template).unwrap();

    let dest = start_destination("tcp:127.0.0.1:0", &dst, Some((&trace, at)));
    let out = source(&src, &trace, at, &dest.address)
        .args(["--compat", "qemu-7.2"])
        .output()
        .unwrap();
    let (dout, _) = dest.finish();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(dout.status.code(), Some(2));
    let expected = format!(
        "QEMU compatibility mismatch for {}: the source's flash behaved like qemu-7.2, this \
         destination's behaves like qemu-10.0",
        dst.display()
    );
    let (serr, derr) = (text(&out.stderr), text(&dout.stderr));
    assert!(serr.contains(&expected), "source: {serr}");
    assert!(
        serr.contains("the destination refused the migration"),
        "{serr}"
    );
    assert!(derr.contains(&expected), "destination: {derr}");
    assert!(derr.contains("--accept-compat-mismatch"), "{derr}");
    assert!(
        fs::read(&dst).unwrap() == template,
        "destination file touched"
    );
    assert!(fs::read(&src).unwrap() == replayed(&before, &lines[..at]));

    // Accepted: the destination goes on as QEMU 10.0 and says so.
    fs::write(&src, &before).unwrap();
    let dest = start_destination_with(
        "tcp:127.0.0.1:0",
        &dst,
        Some((&trace, at)),
        &["--accept-compat-mismatch"],
    );
    let out = source(&src, &trace, at, &dest.address)
        .args(["--compat", "qemu-7.2"])
        .output()
        .unwrap();
    let (dout, rest) = dest.finish();
    assert!(out.status.success(), "source: {}", text(&out.stderr));
    assert!(dout.status.success(), "destination: {}", text(&dout.stderr));
    assert!(
        rest.contains("the source ran qemu-7.2, this device goes on as qemu-10.0"),
        "{rest}"
    );
    assert!(
        fs::read(&dst).unwrap() == after,
        "the destination did not end as QEMU did"
    );
}

/// Closes both relay connections for good (the reply thread holds clones of them).
fn close(from_src: UnixStream, to_dest: std::net::TcpStream) {
    let _ = from_src.shutdown(std::net::Shutdown::Both);
    let _ = to_dest.shutdown(std::net::Shutdown::Both);
}

/// Which side [`kill_mid_stream`] kills.
#[derive(Clone, Copy, Debug)]
enum Victim {
    Source,
    Destination,
}

/// Runs a migration through a relay that passes `keep` bytes of the stream, then SIGKILLs
/// `victim` and closes the relay: the survivor must fail cleanly and both images must be
/// consistent (the source's at line `at`, the destination's untouched).
fn kill_mid_stream(victim: Victim, keep: usize) {
    let dir = tempfile::tempdir().unwrap();
    let trace = testkit::trace_data("ovmf-boot-ops.txt.xz");
    let lines = read_trace_file(&trace).unwrap();
    let before = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz"));
    let (src, dst) = (dir.path().join("src.fd"), dir.path().join("dst.fd"));
    fs::write(&src, &before).unwrap();
    fs::write(&dst, vec![0u8; before.len()]).unwrap();
    let at = 12_345;
    let mut dest = start_destination("tcp:127.0.0.1:0", &dst, Some((&trace, at)));
    let relay_path = dir.path().join("relay.sock");
    let relay = UnixListener::bind(&relay_path).unwrap();
    let mut src_child = source(&src, &trace, at, &format!("unix:{}", relay_path.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (from_src, _) = relay.accept().unwrap();
    let to_dest = std::net::TcpStream::connect(dest.address.strip_prefix("tcp:").unwrap()).unwrap();
    // Replies go back untouched.
    let (mut back_r, mut back_w) = (to_dest.try_clone().unwrap(), from_src.try_clone().unwrap());
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut back_r, &mut back_w);
    });
    // Forward as it comes (the source waits for the answer to its header), up to `keep`.
    let mut passed = 0;
    let mut buf = vec![0u8; 64 << 10];
    while passed < keep {
        let want = (keep - passed).min(buf.len());
        let n = (&from_src).read(&mut buf[..want]).unwrap();
        assert!(n > 0, "the source ended its stream early");
        (&to_dest).write_all(&buf[..n]).unwrap();
        passed += n;
    }
    // The source is now blocked (the relay stops reading) or waiting for an answer.
    std::thread::sleep(Duration::from_millis(50));
    let (survivor_out, survivor) = match victim {
        Victim::Source => {
            src_child.kill().unwrap();
            src_child.wait().unwrap();
            close(from_src, to_dest);
            let (out, _) = dest.finish();
            (out, "destination")
        }
        Victim::Destination => {
            dest.child.kill().unwrap();
            dest.child.wait().unwrap();
            close(from_src, to_dest);
            (src_child.wait_with_output().unwrap(), "source")
        }
    };
    back.join().unwrap();
    let message = text(&survivor_out.stderr);
    assert_eq!(survivor_out.status.code(), Some(2), "{survivor}: {message}");
    match victim {
        Victim::Source => assert!(message.contains("truncated"), "{message}"),
        Victim::Destination => assert!(
            message.contains("migration to unix:") && message.contains("failed"),
            "{message}"
        ),
    }
    assert!(
        fs::read(&dst).unwrap() == vec![0u8; before.len()],
        "destination file touched ({victim:?} killed)"
    );
    assert!(
        fs::read(&src).unwrap() == replayed(&before, &lines[..at]),
        "source image not at line {at} ({victim:?} killed)"
    );
}

#[test]
fn killing_the_source_mid_stream_leaves_the_destination_image_untouched() {
    for keep in [30, 52 + 20_000, 400_000] {
        kill_mid_stream(Victim::Source, keep);
    }
}

#[test]
fn killing_the_destination_mid_stream_fails_the_source_cleanly() {
    for keep in [52, 52 + 20_000, 400_000] {
        kill_mid_stream(Victim::Destination, keep);
    }
}

#[test]
fn a_source_that_cannot_connect_keeps_its_image() {
    let dir = tempfile::tempdir().unwrap();
    let trace = testkit::trace_data("ovmf-boot-ops.txt.xz");
    let lines = read_trace_file(&trace).unwrap();
    let before = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz"));
    let src = dir.path().join("src.fd");
    fs::write(&src, &before).unwrap();
    // A unix socket nobody listens on: refused until the connect timeout.
    let sock = dir.path().join("nobody.sock");
    drop(UnixListener::bind(&sock).unwrap());
    let probe = UnixStream::connect(&sock);
    assert!(probe.is_err());
    let out = source(&src, &trace, 100, &format!("unix:{}", sock.display()))
        .args(["--connect-timeout", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot connect"),
        "{}",
        text(&out.stderr)
    );
    assert!(fs::read(&src).unwrap() == replayed(&before, &lines[..100]));
}
