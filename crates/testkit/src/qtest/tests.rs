//! Unit tests of the qtest oracle against a real QEMU.

use super::*;

fn copy_of(template: &str, dir: &Path) -> PathBuf {
    let path = dir.join(template);
    fs::copy(crate::debian_firmware(template), &path).unwrap();
    path
}

/// Answers recorded in spec/pflash-cfi01.md, a program that reaches the
/// file, and reset through QMP.
#[test]
fn q35_vars_flash_answers_like_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let vars = copy_of("OVMF_VARS_4M.fd", dir.path());
    let mut flash = QtestFlash::start_q35(Stack::Debian12, &vars).unwrap();
    assert_eq!((flash.base(), flash.len()), (0xFFC0_0000, 0x84000));
    assert_eq!(flash.read(0x28, 4), 0x4856_465f);
    flash.write(0x10, 1, 0x70);
    assert_eq!(flash.read(0x10, 4), 0x0080_0080);
    flash.write(0x10, 1, 0x98);
    assert_eq!(flash.read(0x10, 1), u64::from(b'Q'));
    flash.reset();
    assert_eq!(flash.read(0x10, 1), 0x8d, "array mode after reset");
    flash.write(0x2_0000, 1, 0x10);
    flash.write(0x2_0000, 1, 0xa5);
    flash.write(0x2_0000, 1, 0xff);
    let values = flash.run(&[
        QtestOp::Read {
            offset: 0x2_0000,
            size: 1,
        },
        QtestOp::Read {
            offset: 0x28,
            size: 8,
        },
    ]);
    assert_eq!(values, [0xa5, 0x0004_feff_4856_465f]);
    let file = flash.stop();
    assert_eq!(fs::read(file).unwrap()[0x2_0000], 0xa5);
}

#[test]
fn arm_virt_vars_bank_has_dual_chip_ids() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.fd");
    File::create(&vars)
        .unwrap()
        .set_len(ARM_VIRT_BANK_LEN)
        .unwrap();
    let mut flash = QtestFlash::start_arm_virt(Stack::Debian12, &vars).unwrap();
    flash.write(0, 4, 0x0090_0090);
    assert_eq!(flash.read(0, 4), 0x0089_0089);
    assert_eq!(flash.read(4, 4), 0x0018_0018);
    flash.reset();
    assert_eq!(flash.read(0, 4), 0);
    drop(flash);
}

/// The riscv and loongarch vars flashes are where `hw/riscv/virt.c` and
/// `hw/loongarch/virt.c` put them (the start-up mapping check reads both ends), with two
/// 16-bit chips answering ids 0x89/0x18 and a CFI table of 256 KiB sectors (0x400 × 256
/// bytes per chip: 128 KiB) and of the bank's block count.
#[test]
fn riscv_and_loongarch_virt_vars_flashes() {
    type Start = fn(Stack, &Path) -> Result<QtestFlash, String>;
    let machines: [(Start, u64, u64); 2] = [
        (QtestFlash::start_riscv_virt, RISCV_VIRT_VARS_BASE, 32 << 20),
        (
            QtestFlash::start_loongarch_virt,
            LOONGARCH_VIRT_VARS_BASE,
            16 << 20,
        ),
    ];
    for (start, base, len) in machines {
        let dir = tempfile::tempdir().unwrap();
        let vars = dir.path().join("vars.fd");
        // A marker at both ends, for the mapping check.
        let mut content = vec![0u8; len as usize];
        content[..8].copy_from_slice(b"VARSHEAD");
        content[len as usize - 8..].copy_from_slice(b"VARSTAIL");
        fs::write(&vars, &content).unwrap();
        let mut flash = start(Stack::Current, &vars).unwrap();
        assert_eq!((flash.base(), flash.len()), (base, len));
        flash.write(0, 4, 0x0090_0090);
        assert_eq!(flash.read(0, 4), 0x0089_0089);
        assert_eq!(flash.read(4, 4), 0x0018_0018);
        flash.write(0, 4, 0x0098_0098);
        // CFI (word addresses × 4): "Q", erase region: blocks − 1, then sector / 256.
        assert_eq!(flash.read(0x10 * 4, 4), 0x0051_0051);
        let blocks = len / (256 << 10);
        assert_eq!(flash.read(0x2d * 4, 4), (blocks - 1) * 0x1_0001);
        assert_eq!(flash.read(0x2f * 4, 4), 0);
        assert_eq!(flash.read(0x30 * 4, 4), 0x0002_0002);
        flash.write(0, 4, 0x00ff_00ff);
        assert_eq!(flash.read(0, 8), u64::from_le_bytes(*b"VARSHEAD"));
        drop(flash);
    }
}

/// The vmstate of the vars flash, from a real migration stream of both QEMUs.
#[test]
fn vars_vmstate_comes_from_the_migration_stream() {
    for stack in Stack::ALL {
        let dir = tempfile::tempdir().unwrap();
        let vars = copy_of("OVMF_VARS_4M.fd", dir.path());
        let mut flash = QtestFlash::start_q35(stack, &vars).unwrap();
        flash.write(0x10, 1, 0x50); // status 0
        flash.write(0x10, 1, 0xe8);
        flash.write(0x10, 1, 0x05);
        let regs = flash.vars_vmstate().unwrap();
        assert_eq!(
            regs,
            PflashVmstate {
                wcycle: 2,
                cmd: 0xe8,
                status: 0x80,
                counter: 5
            },
            "{stack:?}"
        );
        // Still answering qtest.
        assert_eq!(flash.read(0x10, 1), 0x80);
    }
}

#[test]
fn pipelined_writes_are_fast() {
    let dir = tempfile::tempdir().unwrap();
    let vars = copy_of("OVMF_VARS_4M.fd", dir.path());
    let mut flash = QtestFlash::start_q35(Stack::Debian12, &vars).unwrap();
    let started = Instant::now();
    let ops: Vec<QtestOp> = (0..20_000u64)
        .map(|i| {
            if i % 2 == 0 {
                QtestOp::Write {
                    offset: 0x10,
                    size: 1,
                    value: 0x70,
                }
            } else {
                QtestOp::Read {
                    offset: 0x10,
                    size: 4,
                }
            }
        })
        .collect();
    let values = flash.run(&ops);
    assert_eq!(values.len(), 10_000);
    assert!(values.iter().all(|&v| v == 0x0080_0080));
    println!("20,000 qtest operations in {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(10));
}
