//! Real firmware runs replayed on our device: QEMU 7.2 and QEMU 10.0 recorded
//! every MMIO access OVMF made to the variable-store flash (`-trace
//! pflash_io_*`), with the image before and after. Replaying the accesses
//! from the before-image, on a device in the recording QEMU's compatibility,
//! must give every recorded read value and end byte-identical to the image
//! QEMU's `cfi.pflash01` left.
//!
//! The recordings are in `tests/data/` (xz-compressed; `tests/data/README.md`
//! says what each is). The ignored tests `record_ovmf_traces` (QEMU 7.2) and
//! `record_ovmf2025_qemu10_trace` (QEMU 10.0) re-record them:
//! `cargo test -p pflash --test traces -- --ignored record_`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pflash::{Compat, Geometry, NoEvents, NoStorage, Pflash};
use pflash_trace::{read_trace_file, replay, TraceLine, TraceOp};
use testkit::{boot_ovmf, require_tool, setvar_command, OvmfBoot, Stack};

const TEST_GUID: &str = "4a1b8e36-0bd3-4c35-9b5a-0f7e2f3c6d01";

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Replays `{name}-ops.txt.xz` in `dir` from `{name}-before.fd.xz` on a
/// q35-shaped device in `compat`, which checks every recorded read, and
/// checks the final memory against `{name}-after.fd.xz`. Returns the trace.
fn replay_recording(dir: &Path, name: &str, compat: Compat) -> Vec<TraceLine> {
    let before = testkit::unxz(&dir.join(format!("{name}-before.fd.xz")));
    let after = testkit::unxz(&dir.join(format!("{name}-after.fd.xz")));
    let lines = read_trace_file(&dir.join(format!("{name}-ops.txt.xz")))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(before.len(), after.len());
    assert_ne!(before, after, "{name}: the firmware changed the store");

    let geometry = Geometry::q35(before.len() as u64)
        .unwrap()
        .with_compat(compat);
    let mut dev = Pflash::new(geometry, before, NoStorage, NoEvents).unwrap();
    let stats = replay(&mut dev, &lines).unwrap_or_else(|e| panic!("{name} ({compat}): {e}"));
    println!(
        "{name} ({compat}): {} trace lines replayed: {stats:?}",
        lines.len()
    );
    if let Some(at) = dev.memory().iter().zip(&after).position(|(a, b)| a != b) {
        panic!(
            "{name}: after the replay, byte {at:#x} is {:#04x}; QEMU left {:#04x}",
            dev.memory()[at],
            after[at]
        );
    }
    lines
}

/// Block erases in a trace: a byte write of 0x20 followed by 0xD0 at the
/// same offset, as OVMF's `QemuFlashEraseBlock` does. Returns their offsets.
fn block_erases(lines: &[TraceLine]) -> Vec<u64> {
    let writes: Vec<(u64, u64)> = lines
        .iter()
        .filter_map(|l| match l.op {
            Some(TraceOp::Write { offset, value, .. }) => Some((offset, value)),
            _ => None,
        })
        .collect();
    writes
        .windows(2)
        .filter(|w| w[0].1 == 0x20 && w[1] == (w[0].0, 0xD0))
        .map(|w| w[0].0)
        .collect()
}

/// (a) A boot of the 4M build to the shell, whose `startup.nsh` sets one
/// non-volatile variable: the flash probe, then byte programs (0x10 + data)
/// each range closed by 0xFF; no erase. Recorded with QEMU 7.2; OVMF uses no
/// buffered write, so it replays with either compatibility.
#[test]
fn ovmf_4m_boot_with_one_setvar_replays_exactly() {
    for compat in Compat::ALL {
        let lines = replay_recording(&data_dir(), "ovmf-4m-setvar", compat);
        assert!(lines.len() > 10_000, "{} lines", lines.len());
        assert!(block_erases(&lines).is_empty());
    }
}

/// (c) The same kind of run under today's stack: QEMU 10.0 with edk2
/// 2025.02's `OVMF_CODE_4M.fd` + `OVMF_VARS_4M.fd`, one `setvar`, `reset -s`.
/// It replays byte-identical on a `Compat::Qemu10_0` device (the default).
#[test]
fn ovmf2025_qemu10_setvar_replays_exactly_with_qemu_10_0_compat() {
    let lines = replay_recording(&data_dir(), "ovmf2025-qemu10-setvar", Compat::Qemu10_0);
    assert!(lines.len() > 10_000, "{} lines", lines.len());
    let text = testkit::unxz(&data_dir().join("ovmf2025-qemu10-setvar-ops.txt.xz"));
    let header: String = String::from_utf8_lossy(&text[..400]).into_owned();
    assert!(
        header.contains("QEMU 10.0") && header.contains("edk2 2025.02"),
        "{header}"
    );
}

/// The QEMU 10.0 recording under QEMU 7.2's behaviour replays exactly too:
/// OVMF's flash driver (`QemuFlashFvbServicesRuntimeDxe`) programs byte by
/// byte (0x10) and erases blocks, and never sends a buffered write (0xE8),
/// the one command whose behaviour changed (`pflash::Compat`). A firmware
/// that used one-word buffered writes would make this fail, as it should.
#[test]
fn ovmf2025_qemu10_setvar_also_replays_with_qemu_7_2_compat() {
    let lines = replay_recording(&data_dir(), "ovmf2025-qemu10-setvar", Compat::Qemu7_2);
    assert!(lines.len() > 10_000, "{} lines", lines.len());
}

/// (b) The 2M build rewriting a 1000-byte variable 80 times: the 56 KiB
/// store fills up and the firmware reclaims it through the fault-tolerant
/// write spare, with block erases (0x20 + 0xD0) of both.
#[test]
fn ovmf_2m_reclaim_with_block_erases_replays_exactly() {
    let lines = replay_recording(&data_dir(), "ovmf-2m-reclaim", Compat::Qemu7_2);
    let erases = block_erases(&lines);
    // The spare (0x10000..0x20000, 16 blocks) twice, the store's 14 blocks once.
    assert_eq!(erases.len(), 46, "{erases:x?}");
    assert!(erases.contains(&0) && erases.contains(&0x1f000));
}

/// The first recorded boot (`ovmf-boot-*`: QEMU 7.2, OVMF 2022.11, one `setvar`), the trace
/// the device model was first built against (`docs/pflash-cfi01.md`).
#[test]
fn first_recorded_ovmf_boot_replays_exactly() {
    let before = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz"));
    let after = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-after.fd.xz"));
    let lines = read_trace_file(&testkit::trace_data("ovmf-boot-ops.txt.xz")).unwrap();
    let geometry = Geometry::q35(before.len() as u64)
        .unwrap()
        .with_compat(Compat::Qemu7_2);
    let mut dev = Pflash::new(geometry, before, NoStorage, NoEvents).unwrap();
    replay(&mut dev, &lines).unwrap_or_else(|e| panic!("{e}"));
    assert!(dev.memory() == &after[..], "final image differs");
}

// ---------------------------------------------------------------------------
// Recording

/// Converts QEMU 7.2 or 10.0 log-backend trace output (`-trace pflash_io_read
/// -trace pflash_io_write -trace pflash_reset`) for the device `device`
/// (`system.flash1` is the q35 vars flash) into the trace format: `X` for
/// `pflash_reset`, `W`/`R 0xOFFSET SIZE 0xVALUE` for the MMIO accesses
/// (offsets already device-relative). Reads served from memory in array mode
/// never reach the device and so are not in the trace. Lines may carry the
/// `PID@SECONDS:` prefix of `-msg timestamp=on`.
fn convert_qemu_trace(log: &str, device: &str) -> Result<String, String> {
    let mut out = String::new();
    for (number, line) in log.lines().enumerate() {
        let bad = || format!("QEMU trace line {}: {line:?}", number + 1);
        let line = match line.split_once(":pflash_") {
            Some((prefix, rest)) if prefix.contains('@') => rest,
            _ => match line.strip_prefix("pflash_") {
                Some(rest) => rest,
                None => continue,
            },
        };
        let mut words = line.split_whitespace();
        let (Some(event), Some(name)) = (words.next(), words.next()) else {
            return Err(bad());
        };
        if name.strip_suffix(':') != Some(device) {
            continue;
        }
        let field = |key: &str| -> Result<u64, String> {
            let text = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix(':'))
                .ok_or_else(bad)?;
            match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            }
            .map_err(|_| bad())
        };
        match event {
            "reset" => out.push_str("X\n"),
            "io_write" | "io_read" => {
                let kind = if event == "io_write" { 'W' } else { 'R' };
                let (offset, size, value) = (field("offset")?, field("size")?, field("value")?);
                out.push_str(&format!("{kind} {offset:#06x} {size} {value:#06x}\n"));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `xz -9e` of `data` into `tests/data/{name}`; returns the compressed size.
fn write_xz(name: &str, data: &[u8]) -> u64 {
    let path = data_dir().join(name);
    let mut child = Command::new(require_tool("xz"))
        .args(["-9e", "-T1", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(output.status.success(), "xz failed");
    fs::write(&path, &output.stdout).unwrap();
    output.stdout.len() as u64
}

/// Boots OVMF (`code` + a copy of the `vars` template, both `stack`'s) on
/// `stack`'s QEMU with `script` and QEMU's pflash tracing, and stores
/// `{name}-before.fd.xz`, `{name}-ops.txt.xz` and `{name}-after.fd.xz`.
fn record(stack: Stack, name: &str, code: &str, vars_template: &str, script: &str, about: &str) {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.fd");
    fs::copy(stack.firmware(vars_template), &vars).unwrap();
    let before = fs::read(&vars).unwrap();
    let log = dir.path().join("pflash-trace.log");
    let code = stack.firmware(code);
    let mut boot = OvmfBoot::new(&code, &vars, script);
    boot.stack = stack;
    boot.timeout = std::time::Duration::from_secs(600);
    boot.extra_args = [
        "-trace",
        "pflash_io_read",
        "-trace",
        "pflash_io_write",
        "-trace",
        "pflash_reset",
    ]
    .map(String::from)
    .into();
    boot.extra_args.push("-trace".into());
    boot.extra_args.push(format!("file={}", log.display()));
    let outcome = boot_ovmf(&boot).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        outcome.serial.contains("Reset with"),
        "the script did not finish: {}",
        outcome.serial
    );
    let after = fs::read(&vars).unwrap();
    let ops = convert_qemu_trace(&fs::read_to_string(&log).unwrap(), "system.flash1").unwrap();
    let header = format!(
        "# {about}\n# QEMU {} -trace pflash_io_read,pflash_io_write,pflash_reset of system.flash1 \
         (q35 vars flash), converted by crates/pflash/tests/traces.rs record_ovmf_traces\n\
         # firmware {} ({}) with a copy of its {vars_template}; boot took {:.1?}\n",
        qemu_version(stack),
        code.display(),
        firmware_name(stack),
        outcome.elapsed
    );
    let ops = header + &ops;
    let sizes = [
        write_xz(&format!("{name}-before.fd.xz"), &before),
        write_xz(&format!("{name}-ops.txt.xz"), ops.as_bytes()),
        write_xz(&format!("{name}-after.fd.xz"), &after),
    ];
    println!(
        "{name}: {} trace lines, boot {:.1?}; xz sizes before/ops/after {sizes:?}",
        ops.lines().count(),
        outcome.elapsed
    );
}

/// The edk2 release of `stack`'s firmware, for the trace header.
fn firmware_name(stack: Stack) -> &'static str {
    match stack {
        Stack::Debian12 => "edk2 2022.11, Debian 12",
        Stack::Current => "edk2 2025.02, Debian 13",
    }
}

fn qemu_version(stack: Stack) -> String {
    let output = Command::new(stack.qemu("x86_64"))
        .arg("--version")
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("QEMU emulator version ")
        .to_owned()
}

/// The `startup.nsh` of the setvar recordings: one non-volatile variable,
/// then `reset -s` so that QEMU exits.
fn setvar_script() -> String {
    format!(
        "{}\nreset -s\n",
        setvar_command(
            "NvramTrace",
            TEST_GUID,
            testkit::ATTR_NV | testkit::ATTR_BS | testkit::ATTR_RT,
            b"set from startup.nsh"
        )
    )
}

/// Re-records the QEMU 10.0 trace in `tests/data/` (under a minute).
#[test]
#[ignore = "re-records tests/data; run by hand"]
fn record_ovmf2025_qemu10_trace() {
    record(
        Stack::Current,
        "ovmf2025-qemu10-setvar",
        "OVMF_CODE_4M.fd",
        "OVMF_VARS_4M.fd",
        &setvar_script(),
        "OVMF 2025.02 4M boot to the shell under QEMU 10.0; startup.nsh sets NvramTrace \
         (NV+BS+RT, 20 bytes)",
    );
}

/// Re-records the QEMU 7.2 traces in `tests/data/` (takes a minute or two).
#[test]
#[ignore = "re-records tests/data; run by hand"]
fn record_ovmf_traces() {
    let script = setvar_script();
    record(
        Stack::Debian12,
        "ovmf-4m-setvar",
        "OVMF_CODE_4M.fd",
        "OVMF_VARS_4M.fd",
        &script,
        "OVMF 4M boot to the shell; startup.nsh sets NvramTrace (NV+BS+RT, 20 bytes)",
    );

    // 80 rewrites of a 1000-byte variable need ~85 KB: more than the 56 KiB
    // store of the 2M layout, so the firmware reclaims through the FTW spare.
    let payload: String = (0..1000u32)
        .map(|i| format!("{:02x}", (i * 7 + 3) as u8))
        .collect();
    let script = format!(
        "@echo -off\nfor %a run (1 80)\n  setvar NvramBig -guid {TEST_GUID} -nv -bs =H{payload} \
         =S%a\nendfor\nreset -s\n"
    );
    record(
        Stack::Debian12,
        "ovmf-2m-reclaim",
        "OVMF_CODE.fd",
        "OVMF_VARS.fd",
        &script,
        "OVMF 2M boot; startup.nsh rewrites the 1000-byte NvramBig 80 times, forcing a reclaim",
    );
}

#[test]
fn converts_qemu_trace_lines() {
    let log = "pflash_reset system.flash1: reset\n\
               pflash_reset system.flash0: reset\n\
               pflash_io_write system.flash1: offset:0x0010 size:1 value:0x0050 wcycle:0\n\
               pflash_write system.flash1: clear status bits\n\
               12@1.5:pflash_io_read system.flash1: offset:0x0010 size:1 value:0x0000 cmd:0x70 wcycle:0\n\
               pflash_io_write system.flash0: offset:0x0010 size:1 value:0x0050 wcycle:0\n\
               pflash_io_write system.flash1: offset:0x20000 size:4 value:0x800080 wcycle:0\n";
    assert_eq!(
        convert_qemu_trace(log, "system.flash1").unwrap(),
        "X\nW 0x0010 1 0x0050\nR 0x0010 1 0x0000\nW 0x20000 4 0x800080\n"
    );
    assert!(
        convert_qemu_trace("pflash_io_write system.flash1: offset:zz", "system.flash1").is_err()
    );
}
