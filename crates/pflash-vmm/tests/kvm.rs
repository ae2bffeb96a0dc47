//! The guest program under the KVM VMM and under real QEMU with KVM: the recorded OVMF boot
//! ends at QEMU's after-image, random command sequences end byte-identical in both, reads
//! in read-array mode never exit, and a corrupted varstore is caught.
//!
//! These tests need `/dev/kvm` and fail without it, unless `NVRAM_TESTS_WITHOUT_KVM=1`
//! opts out explicitly.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::Stack;

const VMM: &str = env!("CARGO_BIN_EXE_pflash-vmm");
/// Generous: the boot workload takes a few seconds in either VMM.
const RUN_LIMIT: Duration = Duration::from_secs(180);

fn vmm(args: &[&str]) -> std::process::Output {
    let output = Command::new(VMM)
        .args(args)
        .output()
        .expect("run pflash-vmm");
    assert!(
        output.status.code().is_some(),
        "pflash-vmm {args:?} died by a signal: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn build_guest(dir: &Path, workload: &str) -> PathBuf {
    let path = dir.join(format!("{}.bin", workload.replace(':', "-")));
    let out = vmm(&[
        "guest",
        "--workload",
        workload,
        "-o",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

fn image(dir: &Path, name: &str, after: bool) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec!["vars", "-o", path.to_str().unwrap()];
    if after {
        args.push("--after");
    }
    assert!(vmm(&args).status.success());
    path
}

/// Runs the VMM; returns its exit status and JSON report.
fn run_vmm(code: &Path, vars: &Path, compat: &str, durability: &str) -> (i32, Value) {
    run_vmm_with(code, vars, compat, durability, "background")
}

/// [`run_vmm`] with the varstore written by `writer` (`background` or `inline`).
fn run_vmm_with(
    code: &Path,
    vars: &Path,
    compat: &str,
    durability: &str,
    writer: &str,
) -> (i32, Value) {
    let out = vmm(&[
        "run",
        "--code",
        code.to_str().unwrap(),
        "--vars",
        vars.to_str().unwrap(),
        "--compat",
        compat,
        "--durability",
        durability,
        "--writer",
        writer,
        "--timeout",
        &RUN_LIMIT.as_secs().to_string(),
        "--json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

/// Runs QEMU of `stack` with KVM on the two flash images; returns its exit status and the
/// guest's serial output.
fn run_qemu(stack: Stack, code: &Path, vars: &Path) -> (i32, String) {
    let serial = vars.with_extension(format!("{}.serial", stack.name()));
    let mut child = Command::new(stack.qemu("x86_64"))
        .args([
            "-machine",
            "q35,accel=kvm",
            "-m",
            "16",
            "-nodefaults",
            "-display",
            "none",
        ])
        .arg("-drive")
        .arg(format!(
            "if=pflash,unit=0,readonly=on,format=raw,file={}",
            code.display()
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,unit=1,format=raw,file={}",
            vars.display()
        ))
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .stdin(Stdio::null())
        .spawn()
        .expect("start QEMU");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "QEMU {} still running after {RUN_LIMIT:?}",
                stack.qemu_version()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&serial).unwrap_or_default();
    (
        status
            .code()
            .unwrap_or_else(|| panic!("QEMU died by a signal: {status:?}")),
        text,
    )
}

fn compat(stack: Stack) -> &'static str {
    match stack {
        Stack::Debian12 => "qemu-7.2",
        Stack::Current => "qemu-10.0",
    }
}

/// The guest reported success: `isa-debug-exit` value 0, which QEMU turns into status 1.
fn assert_clean(who: &str, status: i32, serial: &str) {
    assert!(
        serial.contains("result: mismatches 0x00000000"),
        "{who}: guest reported mismatches:\n{serial}"
    );
    assert_eq!(status, 1, "{who}: exit status, serial:\n{serial}");
}

fn assert_same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(x.len(), y.len());
    let first = x.iter().zip(&y).position(|(p, q)| p != q);
    assert_eq!(first, None, "{} and {} differ", a.display(), b.display());
}

#[test]
fn boot_workload_under_the_vmm_ends_at_qemus_after_image_without_array_mode_exits() {
    if !testkit::kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let code = build_guest(dir.path(), "boot");
    let after = image(dir.path(), "after.fd", true);
    // Both compatibilities and both writers, the default durability once (its fdatasyncs
    // are the slow part).
    for (compat, durability, writer) in [
        ("qemu-7.2", "flush-points", "background"),
        ("qemu-10.0", "none", "inline"),
    ] {
        let vars = image(dir.path(), &format!("vars-{compat}.fd"), false);
        let (status, report) = run_vmm_with(&code, &vars, compat, durability, writer);
        let serial = report["serial"].as_str().unwrap();
        assert_clean(compat, status, serial);
        assert_same_file(&vars, &after);
        let exits = &report["exits"];
        assert_eq!(exits["array_mode_read_exits"], 0, "{report:#}");
        // The guest checksums the whole 528 KiB store twice in read-array mode: those
        // 270,336 dword reads must come from the mapped slot, not from exits.
        let mmio_reads = exits["mmio_read"].as_u64().unwrap();
        assert!(mmio_reads < 100, "{mmio_reads} MMIO reads: {report:#}");
        // Every write of the trace (32,912) reached the device through an exit.
        assert!(
            exits["mmio_write"].as_u64().unwrap() >= 32_912,
            "{report:#}"
        );
        assert!(exits["slot_maps"].as_u64().unwrap() > 1, "{report:#}");
        // The run loop wakes the background writer: the MMIO handler never did (no
        // back-pressure with the default backlog either).
        let storage = &report["storage"];
        assert_eq!(storage["wakeups"], 0, "{report:#}");
        assert_eq!(storage["backpressure_waits"], 0, "{report:#}");
    }
}

#[test]
fn boot_workload_under_qemu_ends_at_the_same_after_image() {
    if !testkit::kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let code = build_guest(dir.path(), "boot");
    let after = image(dir.path(), "after.fd", true);
    for stack in Stack::ALL {
        let vars = image(dir.path(), &format!("vars-{}.fd", stack.name()), false);
        let (status, serial) = run_qemu(stack, &code, &vars);
        assert_clean(stack.qemu_version(), status, &serial);
        assert_same_file(&vars, &after);
    }
}

#[test]
fn random_workloads_end_byte_identical_under_the_vmm_and_qemu() {
    if !testkit::kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let before = std::fs::read(image(dir.path(), "before.fd", false)).unwrap();
    for (stack, workload) in [
        (Stack::Debian12, "random:400:72"),
        (Stack::Current, "random:400:100"),
    ] {
        let code = build_guest(dir.path(), workload);
        let ours = image(dir.path(), &format!("vmm-{}.fd", stack.name()), false);
        let theirs = image(dir.path(), &format!("qemu-{}.fd", stack.name()), false);
        let (status, report) = run_vmm(&code, &ours, compat(stack), "none");
        assert_clean("pflash-vmm", status, report["serial"].as_str().unwrap());
        assert_eq!(report["exits"]["array_mode_read_exits"], 0, "{report:#}");
        let (status, serial) = run_qemu(stack, &code, &theirs);
        assert_clean(stack.qemu_version(), status, &serial);
        assert_same_file(&ours, &theirs);
        assert_ne!(
            std::fs::read(&ours).unwrap(),
            before,
            "{workload} changed nothing"
        );
    }
}

#[test]
fn a_flipped_byte_in_the_varstore_is_reported_by_the_guest() {
    if !testkit::kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let code = build_guest(dir.path(), "boot");
    let after = std::fs::read(image(dir.path(), "after.fd", true)).unwrap();
    // Far from the variables the boot writes: the flipped byte survives the run.
    let offset = 0x7_0000;
    for who in ["pflash-vmm", "qemu-10.0"] {
        let vars = image(dir.path(), &format!("flipped-{who}.fd"), false);
        let mut content = std::fs::read(&vars).unwrap();
        content[offset] ^= 0x01;
        std::fs::write(&vars, &content).unwrap();
        let (status, serial) = if who == "pflash-vmm" {
            let (status, report) = run_vmm(&code, &vars, "qemu-10.0", "none");
            (status, report["serial"].as_str().unwrap().to_owned())
        } else {
            run_qemu(Stack::Current, &code, &vars)
        };
        assert!(
            serial.contains("mismatch: initial content checksum"),
            "{who}:\n{serial}"
        );
        assert!(
            serial.contains("mismatch: final content checksum"),
            "{who}:\n{serial}"
        );
        // Two mismatches: isa-debug-exit value 2 + 2, status (4 << 1) | 1.
        assert_eq!(status, 9, "{who}:\n{serial}");
        let result = std::fs::read(&vars).unwrap();
        assert_ne!(result, after);
        let differing: Vec<usize> = (0..after.len())
            .filter(|&i| result[i] != after[i])
            .collect();
        assert_eq!(differing, [offset], "{who}");
    }
}

#[test]
fn a_varstore_of_another_size_fails_the_guests_cfi_probe() {
    if !testkit::kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let code = build_guest(dir.path(), "boot");
    let vars = dir.path().join("small.fd");
    std::fs::write(&vars, vec![0xffu8; 256 * 1024]).unwrap();
    let (status, report) = run_vmm(&code, &vars, "qemu-10.0", "none");
    let serial = report["serial"].as_str().unwrap();
    assert!(serial.contains("cfi probe failed"), "{serial}");
    assert_eq!(report["exit_value"], 1);
    assert_eq!(status, 3);
}

#[test]
fn guest_images_are_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let first = std::fs::read(build_guest(dir.path(), "random:50:9")).unwrap();
    let again = std::fs::read(build_guest(dir.path(), "random:50:9")).unwrap();
    let other = std::fs::read(build_guest(dir.path(), "random:50:10")).unwrap();
    assert_eq!(first, again);
    assert_ne!(first, other);
    assert_eq!(first.len() % 4096, 0);
}

/// Runs the boot workload in the VMM on a copy of the before-image, pausing wherever
/// `pause` says (after a flash access) to snapshot the VM and resume it in a new one (new KVM
/// VM, vCPU and memory) with the same device. Returns the debug-exit value, the serial
/// output, the final exits, the number of pauses and the final vars content.
fn boot_with_pauses(
    dir: &Path,
    pause: &mut dyn FnMut(&pflash_vmm::exits::Exits) -> bool,
) -> (u32, String, pflash_vmm::exits::Exits, usize, Vec<u8>) {
    use pflash_vmm::flash::VarsFlash;
    use pflash_vmm::guest::{self, workload};
    use pflash_vmm::vm::{Outcome, Vm};

    let program = workload::program(workload::Workload::Boot, None).unwrap();
    let code = guest::build_image(&program).unwrap();
    let vars = image(dir, "paused.fd", false);
    let flash = VarsFlash::open(
        &vars,
        pflash::Compat::Qemu7_2,
        pflash::Durability::None,
        pflash_vmm::flash::Writer::Background,
    )
    .unwrap();
    let mut vm = Vm::new(&code, flash, Box::new(std::io::sink())).unwrap();
    let mut serial = Vec::new();
    let mut pauses = 0;
    let value = loop {
        match vm.run(Some(RUN_LIMIT), pause) {
            Ok(Outcome::Stopped) => {
                let snapshot = vm.snapshot().unwrap();
                serial.extend_from_slice(vm.serial());
                let flash = vm.into_flash();
                vm = Vm::from_snapshot(&snapshot, flash, Box::new(std::io::sink())).unwrap();
                pauses += 1;
                // A repeated access would pause again and again: fail instead of looping.
                assert!(
                    pauses < 200,
                    "{pauses} pauses: the guest is not making progress"
                );
            }
            Ok(Outcome::DebugExit(value)) => break value,
            other => panic!("{other:?}"),
        }
    };
    serial.extend_from_slice(vm.serial());
    vm.flash_mut().flush().unwrap();
    let exits = vm.exits();
    drop(vm);
    let content = std::fs::read(&vars).unwrap();
    (
        value,
        String::from_utf8_lossy(&serial).into_owned(),
        exits,
        pauses,
        content,
    )
}

/// The run loop's pause point, where a migration would take the VM: the boot workload
/// paused after 10 random flash accesses and after every flash read, each time snapshotted
/// and resumed in a new VM, ends exactly as an uninterrupted run, with the same exits. A
/// snapshot that left the last read for KVM to complete would have the new VM perform it
/// again (one more MMIO read per such pause).
#[test]
fn boot_workload_resumed_in_new_vms_after_flash_accesses_ends_as_an_uninterrupted_run() {
    use rand::{Rng, SeedableRng};

    if !testkit::kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let after = std::fs::read(image(dir.path(), "after.fd", true)).unwrap();
    let (value, serial, reference, pauses, content) = boot_with_pauses(dir.path(), &mut |_| false);
    assert_eq!((value, pauses), (0, 0), "{serial}");
    assert_eq!(content, after);

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let points: Vec<u64> = (0..10)
        .map(|_| rng.gen_range(1..reference.flash_accesses()))
        .collect();
    let mut reads_seen = 0;
    let (value, serial, exits, pauses, content) = boot_with_pauses(dir.path(), &mut |exits| {
        let after_read = exits.mmio_read != reads_seen;
        reads_seen = exits.mmio_read;
        after_read || points.contains(&exits.flash_accesses())
    });
    let context = format!("seed {seed}, points {points:?}, {pauses} pauses");
    assert!(pauses >= 10 + reference.mmio_read as usize - 1, "{context}");
    assert_eq!(value, 0, "{context}:\n{serial}");
    assert!(serial.contains("result: mismatches 0x00000000"), "{serial}");
    assert_eq!(content, after, "{context}");
    assert_eq!(
        (
            exits.mmio_read,
            exits.mmio_write,
            exits.array_mode_read_exits
        ),
        (reference.mmio_read, reference.mmio_write, 0),
        "{context}"
    );
}
