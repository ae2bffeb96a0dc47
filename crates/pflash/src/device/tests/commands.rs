//! Unit tests of the command sequences: program, erase, buffered write, lock, errors.

use super::*;

#[test]
fn program_stores_value_as_is() {
    let mut d = q35();
    wb(&mut d, 0x20000, 0x10);
    assert_eq!(d.state().wcycle, 1);
    wb(&mut d, 0x20000, 0xa5);
    assert_eq!(d.memory()[0x20000], 0xa5);
    assert_eq!(rd(&mut d, 0x20000, 1), 0x80);
    assert_eq!((d.state().cmd, d.state().wcycle), (0x10, 0));
    assert_eq!(d.storage().calls, [Call::Change(0x20000..0x20001)]);
    wb(&mut d, 0x20000, 0xff);
    assert_eq!(rd(&mut d, 0x20000, 1), 0xa5);
    assert_eq!(
        d.storage().calls,
        [Call::Change(0x20000..0x20001), Call::Flush]
    );

    // 0x40 writes over, not ANDed.
    wb(&mut d, 0x20000, 0x40);
    wb(&mut d, 0x20000, 0x5a);
    wb(&mut d, 0x20000, 0xff);
    assert_eq!(d.memory()[0x20000], 0x5a);

    // A 4-byte data cycle programs 4 bytes, little-endian.
    wb(&mut d, 0x30000, 0x10);
    wr(&mut d, 0x30000, 4, 0x1122_3344);
    assert_eq!(&d.memory()[0x30000..0x30004], &[0x44, 0x33, 0x22, 0x11]);
    assert_eq!(
        d.storage().calls.last(),
        Some(&Call::Change(0x30000..0x30004))
    );
    wb(&mut d, 0, 0xff);
    assert_eq!(
        d.events().0,
        [
            Ev::Array(false),
            Ev::Array(true),
            Ev::Array(false),
            Ev::Array(true),
            Ev::Array(false),
            Ev::Array(true)
        ]
    );
}

#[test]
fn erase_happens_at_the_0x20_cycle() {
    let mut d = q35();
    wb(&mut d, 0x20010, 0x20);
    assert!(d.memory()[0x20000..0x21000].iter().all(|&b| b == 0xff));
    assert_eq!(d.memory()[0x1ffff], pattern(VARS)[0x1ffff]);
    assert_eq!(d.memory()[0x21000], pattern(VARS)[0x21000]);
    assert_eq!(
        d.storage().calls,
        [Call::Change(0x20000..0x21000), Call::Flush]
    );
    assert_eq!(rd(&mut d, 0, 1), 0x80);
    let before = d.memory().to_vec();
    wb(&mut d, 0x20010, 0xd0);
    assert_eq!(d.memory(), &before[..]);
    assert_eq!(rd(&mut d, 0, 1), 0x80);
    assert_eq!(
        (d.state().cmd, d.state().wcycle, d.is_array_mode()),
        (0x20, 0, false)
    );
    wb(&mut d, 0x20010, 0xff);
    assert!(d.is_array_mode());
    assert_eq!(
        d.events().0,
        [
            Ev::Array(false),
            Ev::Erased(0x20000, 0x1000),
            Ev::Array(true)
        ]
    );

    // 0x20 then 0xFF: stays erased, back to array.
    wb(&mut d, 0x41000, 0x20);
    wb(&mut d, 0x41000, 0xff);
    assert!(d.is_array_mode());
    assert!(d.memory()[0x41000..0x42000].iter().all(|&b| b == 0xff));

    // 0x20 then anything else: error, back to array.
    wb(&mut d, 0x50000, 0x20);
    wb(&mut d, 0x50000, 0x42);
    assert!(d.is_array_mode());
    assert!(d.events().0.contains(&Ev::Invalid(0x50000, 0x42)));
    assert!(d.memory()[0x50000..0x51000].iter().all(|&b| b == 0xff));
}

#[test]
fn buffered_write_is_staged_until_confirm() {
    let mut d = q35();
    let orig = d.memory().to_vec();
    wb(&mut d, 0x100, 0xe8);
    assert_eq!(rd(&mut d, 0x100, 1), 0x80);
    wb(&mut d, 0x100, 3); // 4 data cycles
    for i in 0..4u64 {
        assert_eq!(d.state().wcycle, 2);
        wb(&mut d, 0x104 + i, 0xa0 + i as u8);
    }
    assert_eq!(d.state().wcycle, 3);
    assert_eq!(d.memory(), &orig[..]);
    assert!(d.storage().calls.is_empty());
    assert_eq!(rd(&mut d, 0, 1), 0x80);
    wb(&mut d, 0x100, 0xd0);
    assert_eq!(&d.memory()[0x104..0x108], &[0xa0, 0xa1, 0xa2, 0xa3]);
    assert_eq!(&d.memory()[..0x104], &orig[..0x104]);
    assert_eq!(&d.memory()[0x108..], &orig[0x108..]);
    assert_eq!(d.storage().calls, [Call::Change(0x104..0x108)]);
    assert_eq!(
        (d.state().cmd, d.state().wcycle, d.state().write_buffer),
        (0xe8, 0, None)
    );
    assert_eq!(rd(&mut d, 0, 1), 0x80);
    wb(&mut d, 0, 0xff);
    assert_eq!(d.storage().calls.last(), Some(&Call::Flush));

    // Count 1 and two 4-byte cycles: 8 bytes.
    wb(&mut d, 0x200, 0xe8);
    wb(&mut d, 0x200, 1);
    wr(&mut d, 0x200, 4, 0x4433_2211);
    wr(&mut d, 0x204, 4, 0x8877_6655);
    wb(&mut d, 0x200, 0xd0);
    assert_eq!(
        &d.memory()[0x200..0x208],
        &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
    );
    assert_eq!(d.storage().calls.last(), Some(&Call::Change(0x200..0x208)));
    wb(&mut d, 0, 0xff);
}

#[test]
fn buffered_write_abort_discards() {
    let mut d = q35();
    let orig = d.memory().to_vec();
    wb(&mut d, 0x300, 0xe8);
    wb(&mut d, 0x300, 1);
    wb(&mut d, 0x300, 0x11);
    wb(&mut d, 0x301, 0x22);
    wb(&mut d, 0x300, 0xff); // instead of 0xD0
    assert!(d.is_array_mode());
    assert_eq!(d.memory(), &orig[..]);
    assert_eq!(d.state().write_buffer, None);
    assert_eq!(d.storage().calls, [Call::Flush]);
    assert!(d.events().0.iter().all(|e| !matches!(e, Ev::Invalid(..))));
}

#[test]
fn buffered_write_crossing_the_block_fails() {
    // The second half is QEMU 7.2's: 10.0 refuses every one-word buffered write (see
    // `one_word_buffered_write_fails_in_qemu_10`).
    let mut d = q35_compat(Compat::Qemu7_2);
    let orig = d.memory().to_vec();
    wb(&mut d, 0x1fc, 0xe8);
    wb(&mut d, 0x1fc, 1);
    wr(&mut d, 0x1fc, 4, 0x1111_1111);
    wr(&mut d, 0x200, 4, 0x2222_2222); // beyond the 256-byte block at 0x100
    assert_eq!(rd(&mut d, 0, 1), 0x90);
    assert!(d.events().0.contains(&Ev::ProgramError(0x200)));
    wb(&mut d, 0x1fc, 0xd0); // refused: abort
    assert!(d.is_array_mode());
    assert_eq!(d.memory(), &orig[..]);

    // The error bit is sticky: the next buffered write is refused too, until 0x50.
    wb(&mut d, 0x100, 0xe8);
    wb(&mut d, 0x100, 0);
    wb(&mut d, 0x100, 0x77);
    wb(&mut d, 0x100, 0xd0);
    assert!(d.is_array_mode());
    assert_eq!(d.memory()[0x100], orig[0x100]);
    wb(&mut d, 0, 0x50);
    wb(&mut d, 0x100, 0xe8);
    wb(&mut d, 0x100, 0);
    wb(&mut d, 0x100, 0x77);
    wb(&mut d, 0x100, 0xd0);
    assert_eq!(d.memory()[0x100], 0x77);
    assert_eq!(rd(&mut d, 0, 1), 0x80);
}

#[test]
fn buffered_write_block_is_chosen_by_the_count_cycle_in_qemu_7_2() {
    // QEMU 7.2.9+ stages the block addressed by the count cycle: data for the next block
    // is a program error, data for the count's block is fine.
    let mut d = q35_compat(Compat::Qemu7_2);
    wb(&mut d, 0x000, 0xe8);
    wb(&mut d, 0x000, 1);
    wb(&mut d, 0x100, 0x42);
    assert_eq!(rd(&mut d, 0, 1), 0x90);
    assert_eq!(d.state().write_buffer.unwrap().offset, 0);
    wb(&mut d, 0x101, 0x43);
    wb(&mut d, 0x100, 0xd0);
    assert!(d.is_array_mode());
    assert_eq!(d.memory()[0x100], pattern(VARS)[0x100]);
}

#[test]
fn buffered_write_block_is_chosen_by_the_first_data_cycle_in_qemu_10() {
    // QEMU 10.0 stages the block of the first data cycle, wherever the count went.
    let mut d = q35();
    wb(&mut d, 0x000, 0xe8);
    wb(&mut d, 0x000, 1);
    assert_eq!(d.state().write_buffer, None);
    wb(&mut d, 0x100, 0x42);
    assert_eq!(d.state().write_buffer.unwrap().offset, 0x100);
    wb(&mut d, 0x101, 0x43);
    assert_eq!(rd(&mut d, 0, 1), 0x80);
    wb(&mut d, 0x100, 0xd0);
    assert_eq!(rd(&mut d, 0, 1), 0x80);
    wb(&mut d, 0x100, 0xff);
    assert_eq!(&d.memory()[0x100..0x102], &[0x42, 0x43]);
    assert_eq!(d.storage().calls, [Call::Change(0x100..0x102), Call::Flush]);
}

#[test]
fn counter_after_the_last_data_cycle() {
    for (compat, counter) in [(Compat::Qemu7_2, u64::MAX), (Compat::Qemu10_0, 0)] {
        let mut d = q35_compat(compat);
        wb(&mut d, 0x100, 0xe8);
        wb(&mut d, 0x100, 1);
        wb(&mut d, 0x100, 0x11);
        assert_eq!((d.state().wcycle, d.state().counter), (2, 0));
        wb(&mut d, 0x101, 0x22);
        assert_eq!(
            (d.state().wcycle, d.state().counter),
            (3, counter),
            "{compat}"
        );
        wb(&mut d, 0x100, 0xd0);
        wb(&mut d, 0x100, 0xff);
        assert_eq!(&d.memory()[0x100..0x102], &[0x11, 0x22]);
    }
}

#[test]
fn one_word_buffered_write_fails_in_qemu_10() {
    for (compat, status, byte) in [(Compat::Qemu7_2, 0x80, 0x42), (Compat::Qemu10_0, 0x90, 0)] {
        let mut d = q35_compat(compat);
        let orig = d.memory()[0x100];
        wb(&mut d, 0x100, 0xe8);
        wb(&mut d, 0x100, 0);
        wb(&mut d, 0x100, 0x42);
        assert_eq!(rd(&mut d, 0x100, 1), status, "{compat}");
        wb(&mut d, 0x100, 0xd0);
        if compat == Compat::Qemu10_0 {
            // The confirm is refused: back to read array, nothing written.
            assert!(d.is_array_mode());
            assert_eq!(d.memory()[0x100], orig);
            assert!(d.events().0.contains(&Ev::ProgramError(0x100)));
        } else {
            wb(&mut d, 0x100, 0xff);
            assert_eq!(d.memory()[0x100], byte);
        }
    }
}

#[test]
fn buffered_write_arm_virt() {
    let mut d = virt();
    let base = 0x0104_0000;
    wr(&mut d, base, 4, 0x00e8_00e8);
    assert_eq!(rd(&mut d, base, 4), 0x0080_0080);
    // Count is masked to one 16-bit chip: 0x1f words of 4 bytes = 128 bytes.
    wr(&mut d, base, 4, 0x001f_001f);
    assert_eq!(d.state().counter, 0x1f);
    for i in 0..32u64 {
        wr(&mut d, base + 4 * i, 4, 0x1000_0000 + i);
    }
    assert_eq!(d.state().wcycle, 3);
    assert!(d.memory()[base as usize..base as usize + 128]
        .iter()
        .all(|&b| b == 0xff));
    wr(&mut d, base, 4, 0x00d0_00d0);
    assert_eq!(rd(&mut d, base, 4), 0x0080_0080);
    wr(&mut d, base, 4, 0x00ff_00ff);
    for i in 0..32u64 {
        assert_eq!(rd(&mut d, base + 4 * i, 4), 0x1000_0000 + i);
    }
    assert_eq!(
        d.storage().calls,
        [
            Call::Change(base as usize..base as usize + 128),
            Call::Flush
        ]
    );
    // The write block of two chips is 2 * 2 KiB.
    assert_eq!(d.cfi.writeblock_size, 4096);
}

#[test]
fn arm_virt_erase_and_program_with_dual_chip_commands() {
    let mut d = virt();
    let blk = 0x0100_0000u64;
    wr(&mut d, blk, 4, 0x0060_0060);
    wr(&mut d, blk, 4, 0x00d0_00d0);
    assert_eq!(rd(&mut d, blk, 4), 0x0080_0080);
    wr(&mut d, blk + 8, 4, 0x0040_0040);
    wr(&mut d, blk + 8, 4, 0x1234_5678);
    assert_eq!(rd(&mut d, blk, 4), 0x0080_0080);
    wr(&mut d, blk, 4, 0x0020_0020);
    assert!(d.memory()[blk as usize..blk as usize + 0x40000]
        .iter()
        .all(|&b| b == 0xff));
    wr(&mut d, blk, 4, 0x00d0_00d0);
    assert_eq!(rd(&mut d, blk, 4), 0x0080_0080);
    wr(&mut d, blk, 4, 0x00ff_00ff);
    assert!(d.is_array_mode());
    assert_eq!(
        d.storage().calls,
        [
            Call::Change(blk as usize + 8..blk as usize + 12),
            Call::Change(blk as usize..blk as usize + 0x40000),
            Call::Flush,
            Call::Flush
        ]
    );
}

#[test]
fn lock_commands_are_accepted() {
    let mut d = q35();
    let orig = d.memory().to_vec();
    wb(&mut d, 0x1000, 0x60);
    assert_eq!(rd(&mut d, 0x1000, 1), 0x80);
    wb(&mut d, 0x1000, 0xd0);
    assert_eq!((d.state().cmd, d.state().wcycle), (0x60, 0));
    assert_eq!(rd(&mut d, 0x1000, 1), 0x80);
    wb(&mut d, 0x1000, 0x60);
    wb(&mut d, 0x1000, 0x01);
    assert_eq!(rd(&mut d, 0x1000, 4), 0x0080_0080);
    wb(&mut d, 0x1000, 0x60);
    wb(&mut d, 0x1000, 0x2f); // unknown lock command: read array, not logged
    assert!(d.is_array_mode());
    assert!(d.events().0.iter().all(|e| !matches!(e, Ev::Invalid(..))));
    assert_eq!(d.memory(), &orig[..]);
}

#[test]
fn unknown_and_read_array_commands() {
    let mut d = q35();
    wb(&mut d, 0x10, 0x70);
    wb(&mut d, 0x10, 0x42);
    assert!(d.is_array_mode());
    let n = d.events().0.len();
    assert_eq!(
        d.events().0[n - 2..],
        [Ev::Invalid(0x10, 0x42), Ev::Array(true)]
    );
    for cmd in [0x00, 0xf0, 0xff] {
        wb(&mut d, 0x10, 0x90);
        assert!(!d.is_array_mode());
        wb(&mut d, 0x10, cmd);
        assert!(d.is_array_mode(), "{cmd:#x}");
    }
    assert_eq!(
        d.events()
            .0
            .iter()
            .filter(|e| matches!(e, Ev::Invalid(..)))
            .count(),
        1
    );
    // A multi-byte command write uses its low byte.
    wr(&mut d, 0x10, 4, 0x1234_5670);
    assert_eq!(d.state().cmd, 0x70);
    // In array mode, writing 0xff is no transition.
    wb(&mut d, 0x10, 0xff);
    let n = d.events().0.len();
    wb(&mut d, 0x10, 0xff);
    assert_eq!(d.events().0.len(), n);
}

#[test]
fn read_only_sets_error_bits() {
    let mut g = Geometry::q35(VARS as u64).unwrap();
    g.read_only = true;
    let mut d: Dev = Pflash::new(g, pattern(VARS), Rec::default(), Evs::default()).unwrap();
    let orig = d.memory().to_vec();
    wb(&mut d, 0x20000, 0x10);
    wb(&mut d, 0x20000, 0xa5);
    assert_eq!(rd(&mut d, 0, 1), 0x90);
    wb(&mut d, 0x20000, 0x20);
    assert_eq!(rd(&mut d, 0, 1), 0xb0);
    wb(&mut d, 0x20000, 0xd0);
    wb(&mut d, 0, 0xff);
    wb(&mut d, 0, 0x70);
    assert_eq!(rd(&mut d, 0, 1), 0xb0); // sticky
    wb(&mut d, 0, 0x50);
    wb(&mut d, 0, 0x70);
    assert_eq!(rd(&mut d, 0, 1), 0x00);
    // Buffered write.
    wb(&mut d, 0x100, 0xe8);
    wb(&mut d, 0x100, 0);
    wb(&mut d, 0x100, 0x11);
    assert_eq!(rd(&mut d, 0, 1), 0x90);
    wb(&mut d, 0x100, 0xd0);
    assert!(d.is_array_mode());
    assert_eq!(d.memory(), &orig[..]);
    assert!(d.storage().calls.iter().all(|c| *c == Call::Flush));
    assert!(d.events().0.iter().all(|e| !matches!(e, Ev::Erased(..))));
}

#[test]
fn storage_errors_set_status_bits() {
    let mut d = q35();
    d.storage_mut().fail = true;
    wb(&mut d, 0x100, 0x10);
    wb(&mut d, 0x100, 0x12);
    assert_eq!(d.memory()[0x100], 0x12);
    assert_eq!(rd(&mut d, 0, 1), 0x90);
    d.storage_mut().fail = false;
    wb(&mut d, 0, 0x50);
    d.storage_mut().fail = true;
    wb(&mut d, 0x2000, 0x20);
    assert_eq!(rd(&mut d, 0, 1), 0xa0);
    wb(&mut d, 0x2000, 0xd0);
    d.storage_mut().fail = false;
    wb(&mut d, 0, 0x50);
    d.storage_mut().fail = true;
    // The flush point on returning to array mode fails too: program error bit.
    wb(&mut d, 0, 0x70);
    wb(&mut d, 0, 0xff);
    assert_eq!(d.state().status, 0x10);
    assert!(
        d.events()
            .0
            .iter()
            .filter(|e| **e == Ev::StorageError)
            .count()
            >= 3
    );
}
