//! Snapshot, restore and live migration of the device (`pflash-migration` with the core's
//! dirty tracking), in process (the commit point is in `commit.rs`):
//! a device hops between "hosts" (threads joined by a socket pair or TCP loopback) at many
//! points of real and synthetic traces and must end exactly where an uninterrupted replay
//! ends; bad streams, mismatched geometries and dead peers fail cleanly, leaving the
//! destination's file untouched and the source able to migrate again.

use pflash::{Compat, Geometry, NoEvents, NoStorage, Pflash, PflashState};
use pflash_migration::{
    incoming, incoming_with, load, load_with, save, Incoming, IncomingOptions, MigrationError,
    Outgoing,
};
use pflash_trace::{parse_trace, read_trace_file, replay, TraceLine, TraceOp};
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;

mod common;

use common::*;

/// Replays `trace` from `initial`, migrating live after each line in `points` (ascending,
/// 1-based) and continuing on the destination; checks at each hop that the destination
/// equals the source, and returns the final content and state.
fn replay_hopping(
    geometry: &Geometry,
    initial: Vec<u8>,
    trace: &[TraceLine],
    points: &[usize],
) -> (Vec<u8>, PflashState) {
    let mut dev = device(geometry.clone(), initial);
    let mut done = 0;
    for &at in points {
        replay(&mut dev, &trace[done..at]).unwrap_or_else(|e| panic!("before hop {at}: {e}"));
        done = at;
        let (dest, _) = live(&mut dev, geometry, 1).unwrap_or_else(|e| panic!("hop {at}: {e}"));
        assert_eq!(dest.state(), dev.state(), "state after hop at line {at}");
        assert!(
            dest.memory() == dev.memory(),
            "content after hop at line {at}"
        );
        dev = rehost(dest);
    }
    replay(&mut dev, &trace[done..]).unwrap_or_else(|e| panic!("after the last hop: {e}"));
    let state = dev.state();
    (dev.into_parts().0, state)
}

/// Up to `n` points spread over `len` lines, plus the first and last few.
fn spread(len: usize, n: usize) -> Vec<usize> {
    let mut points: Vec<usize> = (1..=n).map(|i| i * len / (n + 1)).collect();
    points.extend([1, 2, 3, len.saturating_sub(1), len]);
    points.sort_unstable();
    points.dedup();
    points.retain(|&p| p >= 1 && p <= len);
    points
}

#[test]
fn the_boot_trace_migrated_at_many_lines_ends_as_qemu_left_it() {
    let trace = read_trace_file(&testkit::trace_data("ovmf-boot-ops.txt.xz")).unwrap();
    let before = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz"));
    let after = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-after.fd.xz"));
    let g = Geometry::q35(before.len() as u64).unwrap();
    // Every line of the probe and the first programs, then spread over the boot.
    let mut points: Vec<usize> = (1..=40).collect();
    points.extend(spread(trace.len(), 60).into_iter().filter(|&p| p > 40));
    let (content, state) = replay_hopping(&g, before, &trace, &points);
    assert!(content == after, "differs from QEMU's image");
    assert_eq!(state, PflashState::default());
}

#[test]
fn the_reclaim_trace_migrated_at_many_lines_ends_as_qemu_left_it() {
    let trace = read_trace_file(&testkit::trace_data("ovmf-2m-reclaim-ops.txt.xz")).unwrap();
    let before = testkit::unxz(&testkit::trace_data("ovmf-2m-reclaim-before.fd.xz"));
    let after = testkit::unxz(&testkit::trace_data("ovmf-2m-reclaim-after.fd.xz"));
    let g = Geometry::q35(before.len() as u64).unwrap();
    // Around every erase: at the 0x20 line (erased, confirm pending) and at the confirm.
    let mut points = spread(trace.len(), 30);
    let erases: Vec<usize> = trace
        .iter()
        .filter(|l| matches!(l.op, Some(TraceOp::Write { value: 0x20, .. })))
        .map(|l| l.line)
        .collect();
    assert!(erases.len() >= 40, "{} erases", erases.len());
    for &e in erases.iter().step_by(4) {
        points.extend([e, e + 1]);
    }
    points.sort_unstable();
    points.dedup();
    let (content, state) = replay_hopping(&g, before, &trace, &points);
    assert!(content == after, "differs from QEMU's image");
    assert_eq!(state, PflashState::default());
}

/// A q35 trace through every mode, with the read values an uninterrupted device gives.
fn synthetic_trace(len: u64) -> String {
    let ops = "X
W 0x10 1 0x50
W 0x10 1 0x70
R 0x10 1 ?
W 0x10 1 0xff
W 0x100 1 0x10
W 0x100 1 0x42
R 0x100 1 ?
W 0x100 1 0xff
R 0x100 1 ?
W 0x400 1 0x40
W 0x400 4 0x11223344
W 0x400 1 0xff
R 0x400 4 ?
W 0x2010 1 0x20
R 0x2010 1 ?
W 0x2010 1 0xd0
R 0x2000 1 ?
W 0 1 0xff
R 0x2010 1 ?
W 0x3000 1 0xe8
R 0x3000 1 ?
W 0x3000 1 0x7
W 0x3000 1 0xa0
W 0x3001 1 0xa1
W 0x3002 1 0xa2
W 0x3003 1 0xa3
W 0x3004 1 0xa4
W 0x3005 1 0xa5
W 0x3006 1 0xa6
W 0x3007 1 0xa7
W 0x3000 1 0xd0
R 0x3000 1 ?
W 0 1 0xff
R 0x3000 4 ?
R 0x3004 4 ?
W 0x3100 1 0xe8
W 0x3100 1 0x1
W 0x3100 4 0x01020304
W 0x3104 4 0x05060708
W 0x3100 1 0xd0
W 0 1 0xff
R 0x3100 4 ?
W 0x3200 1 0xe8
W 0x3200 1 0x3
W 0x3200 1 0x1
W 0x3201 1 0x2
W 0x3202 1 0x3
W 0x3203 1 0x4
W 0x3200 1 0xff
R 0x3200 4 ?
W 0x30f0 1 0xe8
W 0x30f0 1 0x1
W 0x30f0 1 0x5
W 0x3170 1 0x6
R 0x30f0 1 ?
W 0x30f0 1 0xd0
W 0 1 0x50
W 0 1 0x98
R 0x10 1 ?
R 0x11 1 ?
R 0x27 1 ?
W 0 1 0x70
R 0x10 1 ?
W 0 1 0xff
W 0 1 0x90
R 0 1 ?
R 0 2 ?
W 0 1 0xff
W 0 1 0x60
W 0 1 0xd0
R 0 1 ?
W 0 1 0xff
W 0x2020 1 0x20
W 0x2020 1 0xff
R 0x2020 1 ?
W 0x500 1 0x10
W 0x500 1 0x33
W 0x500 1 0x70
R 0x500 1 ?
W 0x500 1 0x90
X
R 0x500 1 ?
W 0 1 0x90
X
W 0x600 1 0x10
";
    let g = Geometry::q35(len).unwrap();
    let mut reference: Pflash =
        Pflash::new(g, vec![0x5a; len as usize], NoStorage, NoEvents).unwrap();
    let mut out = String::new();
    for line in ops.lines() {
        if let Some(rest) = line.strip_suffix(" ?") {
            let mut parts = rest.split_whitespace().skip(1);
            let offset = parts.next().unwrap();
            let offset = u64::from_str_radix(offset.trim_start_matches("0x"), 16).unwrap();
            let size: usize = parts.next().unwrap().parse().unwrap();
            let mut buf = [0u8; 8];
            reference.read(offset, &mut buf[..size]);
            let value = u64::from_le_bytes(buf);
            let _ = writeln!(out, "{rest} {value:#x}");
        } else {
            let t = parse_trace(line).unwrap();
            replay(&mut reference, &t).unwrap();
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

#[test]
fn migrating_after_every_line_of_a_trace_through_every_mode_is_exact() {
    let len = 16 * 4096;
    let text = synthetic_trace(len);
    let trace = parse_trace(&text).unwrap();
    let g = Geometry::q35(len).unwrap();
    let uninterrupted = {
        let mut dev = device(g.clone(), vec![0x5a; len as usize]);
        replay(&mut dev, &trace).unwrap();
        (dev.state(), dev.into_parts().0)
    };
    // The hops must pass through the interesting states.
    let mut seen = Vec::new();
    let mut dev = device(g.clone(), vec![0x5a; len as usize]);
    for l in &trace {
        replay(&mut dev, std::slice::from_ref(l)).unwrap();
        let s = dev.state();
        seen.push((s.cmd, s.wcycle, s.write_buffer.is_some(), s.array_mode));
    }
    for wanted in [
        (0xe8, 2, true, false),
        (0xe8, 3, true, false),
        (0x20, 1, false, false),
        (0x70, 0, false, false),
        (0x98, 1, false, false),
        (0x90, 0, false, false),
        (0x10, 1, false, false),
    ] {
        assert!(
            seen.contains(&wanted),
            "the trace never reaches {wanted:x?}"
        );
    }
    let points: Vec<usize> = (1..=trace.len()).collect();
    let (content, state) = replay_hopping(&g, vec![0x5a; len as usize], &trace, &points);
    assert_eq!(state, uninterrupted.0);
    assert!(content == uninterrupted.1);
}

#[test]
fn offline_snapshots_restore_anywhere_in_the_boot() {
    let trace = read_trace_file(&testkit::trace_data("ovmf-boot-ops.txt.xz")).unwrap();
    let before = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz"));
    let after = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-after.fd.xz"));
    let g = Geometry::q35(before.len() as u64).unwrap();
    for at in spread(trace.len(), 12) {
        let mut dev = q35(before.clone());
        replay(&mut dev, &trace[..at]).unwrap();
        let mut snapshot = Vec::new();
        let stats = save(&dev, &mut snapshot).unwrap();
        assert_eq!(stats.wire_bytes, snapshot.len() as u64);
        let restored = load(snapshot.as_slice(), &g, Path::new("vars.fd")).unwrap();
        assert_eq!(restored.state(), dev.state());
        let mut dev: Pflash = restored.into_device(NoStorage, NoEvents);
        replay(&mut dev, &trace[at..]).unwrap();
        assert!(dev.memory() == after, "snapshot at line {at}");
    }
}

#[test]
fn an_arm_virt_bank_migrates_mid_buffered_write() {
    let g = Geometry::arm_virt();
    let len = g.size() as usize;
    let mut content = vec![0xff; len];
    content[..4096].fill(0x11);
    let mut dev = device(g.clone(), content);
    // Dual-chip commands as ArmVirt sends them: buffered write of 4 words at 0x40000.
    dev.write(0x40000, &0x00e8_00e8u32.to_le_bytes());
    dev.write(0x40000, &0x0003_0003u32.to_le_bytes());
    dev.write(0x40000, &0xdead_beefu32.to_le_bytes());
    dev.write(0x40004, &0x0bad_f00du32.to_le_bytes());
    let (dest, stats) = live(&mut dev, &g, 1).unwrap();
    assert!(stats.wire_bytes >= g.size());
    assert!(dest.state().write_buffer.is_some());
    let mut dev = rehost(dest);
    dev.write(0x40008, &0x1111_2222u32.to_le_bytes());
    dev.write(0x4000c, &0x3333_4444u32.to_le_bytes());
    dev.write(0x40000, &0x00d0_00d0u32.to_le_bytes());
    dev.write(0x40000, &0x00ff_00ffu32.to_le_bytes());
    let mut word = [0u8; 4];
    dev.read(0x4000c, &mut word);
    assert_eq!(u32::from_le_bytes(word), 0x3333_4444);
    dev.read(0x40000, &mut word);
    assert_eq!(u32::from_le_bytes(word), 0xdead_beef);
}

#[test]
fn precopy_resends_only_the_blocks_the_guest_dirtied() {
    let before = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz"));
    let g = Geometry::q35(before.len() as u64).unwrap();
    let mut dev = q35(before);
    let (a, b) = UnixStream::pair().unwrap();
    let local = g.clone();
    let dest = thread::spawn(move || incoming(&b, &b, &local, Path::new("dest.fd")));
    let program = |dev: &mut Dev, at: u64, v: u8| {
        dev.write(at, &[0x10]);
        dev.write(at, &[v]);
        dev.write(at, &[0xff]);
    };
    let mut out = Outgoing::start(&mut dev, &a, &a).unwrap();
    let r1 = out.precopy_round(&mut dev).unwrap();
    assert_eq!((r1.round, r1.chunks, r1.content_bytes), (1, 132, VARS));
    // The guest runs: three blocks, one of them twice, and an erase.
    program(&mut dev, 0x1_0000, 1);
    program(&mut dev, 0x1_0001, 2);
    program(&mut dev, 0x4_5000, 3);
    dev.write(0x7_0000, &[0x20]);
    dev.write(0x7_0000, &[0xd0]);
    dev.write(0x7_0000, &[0xff]);
    assert_eq!(dev.storage().dirty_chunks(), 3);
    let r2 = out.precopy_round(&mut dev).unwrap();
    assert_eq!((r2.round, r2.chunks, r2.content_bytes), (2, 3, 3 * 4096));
    assert!(r2.wire_bytes < 3 * 4096 + 200, "{r2:?}");
    let r3 = out.precopy_round(&mut dev).unwrap();
    assert_eq!((r3.chunks, r3.content_bytes), (0, 0));
    assert!(
        r3.wire_bytes <= 32,
        "an empty round is a round end only: {r3:?}"
    );
    // One more change, in the middle of a sequence, then the final round.
    dev.write(0x2_0000, &[0x10]);
    dev.write(0x2_0000, &[0x77]);
    let total = out.complete(&mut dev).unwrap();
    assert_eq!(total.final_round.chunks, 1);
    assert!(total.final_round.wire_bytes < 4096 + 200, "{total:?}");
    assert_eq!(total.rounds, 4);
    assert_eq!(total.chunks, 132 + 3 + 1);
    let inc = dest.join().unwrap().unwrap();
    assert_eq!(inc.stats().rounds, 4);
    assert_eq!(inc.state(), dev.state());
    assert!(inc.memory() == dev.memory());
}

#[test]
fn migration_works_over_tcp_loopback() {
    let before = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz"));
    let g = Geometry::q35(before.len() as u64).unwrap();
    let mut dev = q35(before);
    dev.write(0x100, &[0x70]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let local = g.clone();
    let dest = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        incoming(&s, &s, &local, Path::new("dest.fd"))
    });
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut out = Outgoing::start(&mut dev, &s, &s).unwrap();
    out.precopy_round(&mut dev).unwrap();
    out.complete(&mut dev).unwrap();
    let inc = dest.join().unwrap().unwrap();
    assert_eq!(inc.state(), dev.state());
    assert!(inc.memory() == dev.memory());
}

// ---------------------------------------------------------------------------------------
// Failures

fn assert_healthy(dev: &mut Dev, state: &PflashState, content: &[u8]) {
    assert_eq!(&dev.state(), state, "the source's state changed");
    assert!(dev.memory() == content, "the source's content changed");
    // It can still migrate, to a good destination.
    let g = dev.geometry().clone();
    let (dest, _) = live(dev, &g, 1).expect("a later migration");
    assert_eq!(&dest.state(), state);
    assert!(dest.memory() == content);
}

#[test]
fn size_and_geometry_mismatches_are_refused_naming_both_sizes_and_the_file() {
    let (mut dev, state, content) = busy_source();
    for (local_len, text) in [
        (
            131_072u64,
            "0x84000 (540672) bytes, the local flash is 0x20000 (131072) bytes",
        ),
        (
            VARS + 4096,
            "0x84000 (540672) bytes, the local flash is 0x85000 (544768) bytes",
        ),
    ] {
        let local = Geometry::q35(local_len).unwrap();
        let e = live(&mut dev, &local, 1).unwrap_err();
        let message = e.to_string();
        assert!(matches!(e, MigrationError::Refused(_)), "{e:?}");
        assert!(
            message.contains("size mismatch for dest.fd") && message.contains(text),
            "{message}"
        );
        assert_healthy(&mut dev, &state, &content);
    }
    let mut other = dev.geometry().clone();
    other.sector_len = 8192;
    other.num_blocks /= 2;
    other.bank_width = 2;
    let e = live(&mut dev, &other, 1).unwrap_err().to_string();
    assert!(
        e.contains("geometry mismatch for dest.fd")
            && e.contains("sector length is 0x1000 incoming, 0x2000 locally")
            && e.contains("bank width is 1 incoming, 2 locally"),
        "{e}"
    );
    assert_healthy(&mut dev, &state, &content);
    // The destination side reports the same mismatch.
    let mut snapshot = Vec::new();
    save(&dev, &mut snapshot).unwrap();
    let e = load(
        snapshot.as_slice(),
        &Geometry::q35(131_072).unwrap(),
        Path::new("/vm/x.fd"),
    );
    assert!(matches!(
        e,
        Err(MigrationError::SizeMismatch {
            incoming: VARS,
            local: 131_072,
            ..
        })
    ));
}

/// Record boundaries of a stream: (offset, length).
fn records(stream: &[u8]) -> Vec<(usize, usize)> {
    let mut at = 52;
    let mut out = Vec::new();
    while at < stream.len() {
        let len = u32::from_le_bytes(stream[at + 8..at + 12].try_into().unwrap()) as usize;
        out.push((at, 12 + len + 4));
        at += 12 + len + 4;
    }
    out
}

fn load_q35(stream: &[u8]) -> Result<Incoming, MigrationError> {
    load(stream, &Geometry::q35(VARS).unwrap(), Path::new("vars.fd"))
}

#[test]
fn truncated_corrupt_reordered_foreign_and_future_streams_are_rejected() {
    let (dev, _, _) = busy_source();
    let mut stream = Vec::new();
    save(&dev, &mut stream).unwrap();
    load_q35(&stream).expect("the intact stream");
    let recs = records(&stream);
    assert!(recs.len() >= 3);

    // Truncation: every header byte, around every record boundary, and spread over data.
    let mut cuts: Vec<usize> = (0..60).collect();
    for &(at, len) in &recs {
        cuts.extend([
            at,
            at + 1,
            at + 11,
            at + 12,
            at + 13,
            at + len - 4,
            at + len - 1,
        ]);
    }
    cuts.extend((0..stream.len()).step_by(4999));
    for cut in cuts.into_iter().filter(|&c| c < stream.len()) {
        match load_q35(&stream[..cut]) {
            Err(MigrationError::Truncated { offset, .. }) => {
                assert_eq!(offset as usize, cut.min(offset as usize))
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    // Trailing garbage after the end record.
    let mut longer = stream.clone();
    longer.push(0);
    assert!(load_q35(&longer).is_err());

    // One flipped byte anywhere: every byte of the header and of the small records, and a
    // spread over the content.
    let mut flips: Vec<usize> = (0..52).collect();
    for &(at, len) in &recs {
        if len < 200 {
            flips.extend(at..at + len);
        } else {
            flips.extend([at, at + 4, at + 8, at + 12, at + 16, at + 27, at + len - 1]);
        }
    }
    flips.extend((0..stream.len()).step_by(3001));
    for at in flips {
        let mut bad = stream.clone();
        bad[at] ^= 0x40;
        let e = load_q35(&bad).expect_err(&format!("flip at {at}"));
        let message = e.to_string();
        assert!(
            message.contains("corrupt")
                || message.contains("not a pflash")
                || message.contains("version")
                || message.contains("truncated")
                || message.contains("mismatch"),
            "flip at {at}: {message}"
        );
    }

    // Two records swapped (each with a correct CRC of its own).
    let (a, b) = (recs[1], recs[2]);
    let mut swapped = stream[..a.0].to_vec();
    swapped.extend_from_slice(&stream[b.0..b.0 + b.1]);
    swapped.extend_from_slice(&stream[a.0..a.0 + a.1]);
    swapped.extend_from_slice(&stream[b.0 + b.1..]);
    let e = load_q35(&swapped).unwrap_err().to_string();
    assert!(e.contains("reordered"), "{e}");

    // Foreign streams.
    let e = load_q35(b"QEVM\0\0\0\x03 a QEMU migration stream").unwrap_err();
    assert!(matches!(e, MigrationError::Foreign { .. }), "{e:?}");
    assert!(e.to_string().starts_with("not a pflash migration stream"));

    // A newer, incompatible version is refused by its version, before its CRC or layout.
    let mut future = stream.clone();
    future[8..12].copy_from_slice(&[4, 0, 3, 0]);
    future.truncate(20);
    let e = load_q35(&future).unwrap_err();
    assert!(
        matches!(
            e,
            MigrationError::Version {
                version: 4,
                needs: 3
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("needs a reader of version 3"), "{e}");
    // A newer but compatible writer (version 3, readable by 2) is accepted.
    let mut compatible = stream.clone();
    compatible[8] = 3;
    reseal(&mut compatible);
    load_q35(&compatible).expect("a compatible newer stream");
}

/// Recomputes the header CRC and the whole-stream CRC of the end record (which covers the
/// header) after a test edited the header.
fn reseal(stream: &mut [u8]) {
    let crc = crc32(&stream[..48]);
    stream[48..52].copy_from_slice(&crc.to_le_bytes());
    let (end_at, _) = *records(stream).last().unwrap();
    let total = crc32(&stream[..end_at]);
    stream[end_at + 12..end_at + 16].copy_from_slice(&total.to_le_bytes());
    let rec_crc = crc32(&stream[end_at..end_at + 24]);
    stream[end_at + 24..end_at + 28].copy_from_slice(&rec_crc.to_le_bytes());
}

/// A source that ran QEMU 7.2's device, mid buffered write (its block staged at the count
/// cycle, as 7.2 does), with its state and content.
fn busy_qemu_7_2_source() -> (Dev, PflashState, Vec<u8>) {
    let before = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz"));
    let g = Geometry::q35(VARS).unwrap().with_compat(Compat::Qemu7_2);
    let mut dev = device(g, before);
    dev.write(0x3000, &[0xe8]);
    dev.write(0x3000, &[0x3]);
    let state = dev.state();
    assert!(state.write_buffer.is_some());
    let content = dev.memory().to_vec();
    (dev, state, content)
}

#[test]
fn a_compat_mismatch_is_refused_naming_both_unless_accepted() {
    let (mut dev, state, content) = busy_qemu_7_2_source();
    let local = Geometry::q35(VARS).unwrap(); // QEMU 10.0
    assert_eq!(local.compat, Compat::Qemu10_0);

    // Live: the destination refuses, the source hears why and keeps its device.
    let e = live(&mut dev, &local, 1).unwrap_err();
    assert!(matches!(e, MigrationError::Refused(_)), "{e:?}");
    let message = e.to_string();
    assert!(
        message.contains("QEMU compatibility mismatch for dest.fd")
            && message.contains("the source's flash behaved like qemu-7.2")
            && message.contains("this destination's behaves like qemu-10.0"),
        "{message}"
    );
    assert_healthy(&mut dev, &state, &content);

    // The destination's own error names both, as a variant a VMM can match.
    let mut snapshot = Vec::new();
    save(&dev, &mut snapshot).unwrap();
    let e = load(snapshot.as_slice(), &local, Path::new("/vm/x.fd")).unwrap_err();
    assert!(
        matches!(
            e,
            MigrationError::CompatMismatch {
                incoming: Compat::Qemu7_2,
                local: Compat::Qemu10_0,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("/vm/x.fd"), "{e}");

    // Accepted: the registers and content arrive, and the device goes on as QEMU 10.0.
    let accept = IncomingOptions {
        accept_compat_mismatch: true,
    };
    let (a, b) = UnixStream::pair().unwrap();
    let dest = {
        let local = local.clone();
        thread::spawn(move || incoming_with(&b, &b, &local, Path::new("dest.fd"), &accept))
    };
    let out = Outgoing::start(&mut dev, &a, &a).unwrap();
    out.complete(&mut dev).unwrap();
    drop(a);
    let received = dest.join().unwrap().unwrap();
    assert_eq!(received.source_compat(), Compat::Qemu7_2);
    assert_eq!(received.geometry().compat, Compat::Qemu10_0);
    assert_eq!(received.state(), state);
    assert!(received.memory() == content.as_slice());
    let mut moved = received.into_device(NoStorage, NoEvents);
    assert_eq!(moved.geometry().compat, Compat::Qemu10_0);
    // The block staged by 7.2 at the count cycle is kept: the data lands in it.
    moved.write(0x3000, &[0x5a]);
    for i in 1..4 {
        moved.write(0x3000 + i, &[0x5a]);
    }
    moved.write(0x3000, &[0xd0]);
    moved.write(0x3000, &[0xff]);
    assert_eq!(&moved.memory()[0x3000..0x3004], &[0x5a; 4]);

    // The other way round, offline.
    let mut newer = q35(content.clone());
    newer.write(0x10, &[0x70]);
    let mut snapshot = Vec::new();
    save(&newer, &mut snapshot).unwrap();
    let old_local = Geometry::q35(VARS).unwrap().with_compat(Compat::Qemu7_2);
    let e = load(snapshot.as_slice(), &old_local, Path::new("old.fd")).unwrap_err();
    assert!(
        e.to_string().contains("behaved like qemu-10.0")
            && e.to_string().contains("behaves like qemu-7.2"),
        "{e}"
    );
    let restored = load_with(
        snapshot.as_slice(),
        &old_local,
        Path::new("old.fd"),
        &accept,
    )
    .expect("accepted mismatch");
    assert_eq!(restored.source_compat(), Compat::Qemu10_0);
    assert_eq!(restored.geometry().compat, Compat::Qemu7_2);
    assert_eq!(restored.state(), newer.state());
}

#[test]
fn version_1_streams_are_read_as_qemu_7_2() {
    let (dev, state, content) = busy_qemu_7_2_source();
    let mut stream = Vec::new();
    save(&dev, &mut stream).unwrap();
    assert_eq!(&stream[8..12], &[2, 0, 2, 0], "this build writes version 2");
    assert_eq!(stream[41], 1, "the compatibility byte says qemu-7.2");

    // What a version-1 writer sent: versions 1/1 and no compatibility byte.
    let mut v1 = stream.clone();
    v1[8..12].copy_from_slice(&[1, 0, 1, 0]);
    v1[41] = 0;
    reseal(&mut v1);
    let old_local = Geometry::q35(VARS).unwrap().with_compat(Compat::Qemu7_2);
    let restored = load(v1.as_slice(), &old_local, Path::new("vars.fd")).unwrap();
    assert_eq!(restored.source_compat(), Compat::Qemu7_2);
    assert_eq!(restored.state(), state);
    assert!(restored.memory() == content.as_slice());
    // Into a QEMU 10.0 device it is a mismatch like any 7.2 stream.
    let e = load_q35(&v1).unwrap_err();
    assert!(
        matches!(
            e,
            MigrationError::CompatMismatch {
                incoming: Compat::Qemu7_2,
                local: Compat::Qemu10_0,
                ..
            }
        ),
        "{e:?}"
    );

    // A version-2 stream must say which compatibility it ran.
    for (code, what) in [(0u8, "code 0"), (9, "code 9")] {
        let mut bad = stream.clone();
        bad[41] = code;
        reseal(&mut bad);
        let e = load(bad.as_slice(), &old_local, Path::new("vars.fd")).unwrap_err();
        assert!(
            matches!(e, MigrationError::Corrupt { offset: 41, .. }) && e.to_string().contains(what),
            "{e:?}"
        );
    }
    // A version-1 stream with a non-zero byte 41 is corrupt, as it always was.
    let mut bad = v1.clone();
    bad[41] = 1;
    reseal(&mut bad);
    assert!(matches!(
        load(bad.as_slice(), &old_local, Path::new("vars.fd")),
        Err(MigrationError::Corrupt { .. })
    ));
}

/// CRC-32 (IEEE), bitwise: the tests do not trust the implementation under test.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                crc >> 1 ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_destination_dying_mid_stream_leaves_the_source_intact() {
    let (mut dev, state, content) = busy_source();
    for keep in [0usize, 52, 100, 70_000, 540_000] {
        let (a, b) = UnixStream::pair().unwrap();
        let g = dev.geometry().clone();
        let dest = thread::spawn(move || {
            // Accept the header like a real destination, read `keep` bytes, then die.
            let mut header = [0u8; 52];
            (&b).read_exact(&mut header).unwrap();
            let accept = {
                let mut f = b"PFLR\x01\x00\x00\x00".to_vec();
                let crc = crc32(&f);
                f.extend_from_slice(&crc.to_le_bytes());
                f
            };
            (&b).write_all(&accept).unwrap();
            let mut sink = vec![0u8; keep];
            let _ = (&b).read_exact(&mut sink);
            drop(b);
            g
        });
        let result = Outgoing::start(&mut dev, &a, &a).and_then(|mut out| {
            out.precopy_round(&mut dev)?;
            out.complete(&mut dev)
        });
        dest.join().unwrap();
        let e = result.expect_err("the destination died");
        assert!(matches!(e, MigrationError::Io { .. }), "{e:?}");
        assert_healthy(&mut dev, &state, &content);
    }
}

#[test]
fn a_source_dying_mid_stream_leaves_the_destination_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dest.fd");
    fs::write(&file, vec![0u8; VARS as usize]).unwrap();
    let (dev, _, _) = busy_source();
    let mut stream = Vec::new();
    save(&dev, &mut stream).unwrap();
    for cut in [10usize, 52, 60, 4000, 300_000, stream.len() - 1] {
        let (a, b) = UnixStream::pair().unwrap();
        let path = file.clone();
        let dest = thread::spawn(move || {
            let g = Geometry::q35(VARS).unwrap();
            incoming(&b, &b, &g, &path)
        });
        (&a).write_all(&stream[..cut]).unwrap();
        drop(a);
        let e = dest.join().unwrap().unwrap_err();
        assert!(
            matches!(e, MigrationError::Truncated { .. }),
            "cut {cut}: {e:?}"
        );
        assert!(fs::read(&file).unwrap() == vec![0u8; VARS as usize]);
    }
}
