//! Each difference between QEMU 7.2's and QEMU 10.0's `cfi.pflash01` (see `pflash::Compat`),
//! shown by a short fixed sequence run against both real QEMUs (`Stack::Debian12`'s 7.2,
//! `Stack::Current`'s 10.0, through qtest) and against our device in the matching
//! compatibility: every read, the final image and the migrated registers must agree with
//! the QEMU of that compatibility, and the tests assert what each release answers.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use pflash::{Compat, Geometry, NoEvents, NoStorage, Pflash};
use testkit::{debian_firmware, QtestFlash, QtestOp, Stack};

fn compat_of(stack: Stack) -> Compat {
    match stack {
        Stack::Debian12 => Compat::Qemu7_2,
        Stack::Current => Compat::Qemu10_0,
    }
}

/// A machine's vars flash: its geometry, how to start it, its starting image.
struct Machine {
    geometry: Geometry,
    start: fn(Stack, &Path) -> Result<QtestFlash, String>,
    image: fn(&Path) -> PathBuf,
}

fn q35() -> Machine {
    Machine {
        geometry: Geometry::q35(540_672).unwrap(),
        start: QtestFlash::start_q35,
        image: |dir| {
            let path = dir.join("vars.fd");
            fs::copy(debian_firmware("OVMF_VARS_4M.fd"), &path).unwrap();
            path
        },
    }
}

fn arm_virt() -> Machine {
    Machine {
        geometry: Geometry::arm_virt(),
        start: QtestFlash::start_arm_virt,
        image: |dir| {
            let path = dir.join("vars.fd");
            File::create(&path).unwrap().set_len(64 << 20).unwrap();
            path
        },
    }
}

fn w(offset: u64, size: u8, value: u64) -> QtestOp {
    QtestOp::Write {
        offset,
        size,
        value,
    }
}

fn r(offset: u64, size: u8) -> QtestOp {
    QtestOp::Read { offset, size }
}

/// What one QEMU did with a sequence: its read values, its vars image afterwards and the
/// registers it migrated right after the sequence (wcycle, cmd, status, counter).
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    reads: Vec<u64>,
    registers: (u8, u8, u8, u64),
    image: Vec<u8>,
}

/// Runs `ops` on `stack`'s QEMU and on our device in the matching compatibility, asserts
/// that both did the same, and returns what they did.
fn run(machine: &Machine, stack: Stack, ops: &[QtestOp]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let vars = (machine.image)(dir.path());
    let content = fs::read(&vars).unwrap();
    let mut qemu = (machine.start)(stack, &vars).unwrap();
    let reads = qemu.run(ops);
    let regs = qemu.vars_vmstate().unwrap();
    let theirs = Outcome {
        reads,
        registers: (regs.wcycle, regs.cmd, regs.status, regs.counter),
        image: fs::read(qemu.stop()).unwrap(),
    };

    let compat = compat_of(stack);
    let geometry = machine.geometry.clone().with_compat(compat);
    let mut dev: Pflash = Pflash::new(geometry, content, NoStorage, NoEvents).unwrap();
    let mut reads = Vec::new();
    for op in ops {
        match *op {
            QtestOp::Read { offset, size } => {
                let mut b = [0u8; 8];
                dev.read(offset, &mut b[..usize::from(size)]);
                reads.push(u64::from_le_bytes(b));
            }
            QtestOp::Write {
                offset,
                size,
                value,
            } => dev.write(offset, &value.to_le_bytes()[..usize::from(size)]),
        }
    }
    let st = dev.state();
    let ours = Outcome {
        reads,
        registers: (st.wcycle, st.cmd, st.status, st.counter),
        image: dev.memory().to_vec(),
    };
    assert_eq!(
        (&ours.reads, ours.registers),
        (&theirs.reads, theirs.registers),
        "our device with {compat} differs from QEMU {} (reads, registers)",
        stack.qemu_version()
    );
    assert!(
        ours.image == theirs.image,
        "our device with {compat} leaves another image than QEMU {}",
        stack.qemu_version()
    );
    theirs
}

/// Difference 1: the block a buffered write stages. The count cycle goes to block 0x000,
/// the data to block 0x100. QEMU 7.2 staged block 0x000 at the count cycle, so the data is
/// outside it: program error (0x90), the confirm is refused, nothing is written. QEMU 10.0
/// (commit 2563be6317fa, "hw/pflash: fix block write start") stages the data's block: the
/// write succeeds.
#[test]
fn buffered_write_block_follows_the_first_data_cycle_in_qemu_10_0() {
    let ops = [
        w(0x000, 1, 0xe8),
        w(0x000, 1, 1), // two words
        w(0x100, 1, 0x42),
        w(0x101, 1, 0x43),
        r(0x000, 1), // status
        w(0x100, 1, 0xd0),
        r(0x000, 1), // status, or the array if the confirm was refused
        w(0x000, 1, 0xff),
        r(0x100, 2),
        w(0x000, 1, 0x50),
    ];
    let old = run(&q35(), Stack::Debian12, &ops);
    let new = run(&q35(), Stack::Current, &ops);
    let array = u64::from(old.image[0]);
    let before = u64::from_le_bytes([old.image[0x100], old.image[0x101], 0, 0, 0, 0, 0, 0]);
    assert_eq!(old.reads, [0x90, array, before]);
    assert_eq!(new.reads, [0x80, 0x80, 0x4342]);
    assert_eq!(&new.image[0x100..0x102], &[0x42, 0x43]);
}

/// Difference 2: a buffered write of one word (count 0). QEMU 7.2 programs it; QEMU 10.0
/// only stages a block while the counter is not 0 (same commit), so its single data cycle
/// is a program error and the confirm is refused. On q35 and on arm `virt` (two chips, as
/// the differential test first found it there).
#[test]
fn one_word_buffered_write_fails_in_qemu_10_0() {
    let q35_ops = [
        w(0x200, 1, 0xe8),
        w(0x200, 1, 0),
        w(0x200, 1, 0x5a),
        r(0x200, 1),
        w(0x200, 1, 0xd0),
        r(0x200, 1),
        w(0x200, 1, 0xff),
        r(0x200, 1),
    ];
    let old = run(&q35(), Stack::Debian12, &q35_ops);
    let new = run(&q35(), Stack::Current, &q35_ops);
    let original = u64::from(new.image[0x200]);
    assert_eq!(old.reads, [0x80, 0x80, 0x5a]);
    assert_eq!(new.reads, [0x90, original, original]);
    assert_eq!(new.registers.2, 0x90, "the error bit is sticky");

    let bank = 0x0104_0000;
    let arm_ops = [
        w(bank, 4, 0x00e8_00e8),
        w(bank, 4, 0),
        w(bank, 4, 0x1234_5678),
        r(bank, 4),
        w(bank, 4, 0x00d0_00d0),
        r(bank, 4),
        w(bank, 4, 0x00ff_00ff),
        r(bank, 4),
    ];
    let old = run(&arm_virt(), Stack::Debian12, &arm_ops);
    let new = run(&arm_virt(), Stack::Current, &arm_ops);
    assert_eq!(old.reads, [0x0080_0080, 0x0080_0080, 0x1234_5678]);
    assert_eq!(new.reads, [0x0090_0090, 0, 0]);
}

/// Difference 3, seen only in the migrated registers: after the last data cycle QEMU 7.2
/// leaves the counter wrapped to u64::MAX, QEMU 10.0 ("hw/block/pflash_cfi01: Don't
/// decrement pfl->counter below 0") at 0. Read from each QEMU's own migration stream.
#[test]
fn buffered_write_counter_stays_at_zero_in_qemu_10_0() {
    let ops = [
        w(0x300, 1, 0xe8),
        w(0x300, 1, 1),
        w(0x300, 1, 0x11),
        w(0x301, 1, 0x22),
    ];
    let old = run(&q35(), Stack::Debian12, &ops);
    let new = run(&q35(), Stack::Current, &ops);
    assert_eq!(old.registers, (3, 0xe8, 0x80, u64::MAX));
    assert_eq!(new.registers, (3, 0xe8, 0x80, 0));
}
