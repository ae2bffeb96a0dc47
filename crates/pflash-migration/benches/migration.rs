//! Migration costs: a whole transfer (528 KiB q35 varstore, 64 MiB arm `virt` bank), the
//! final round with the guest paused (0, 1 and 10 dirty blocks: the downtime), and the
//! destination's commit with fsync. Run: `cargo bench -p pflash-migration --bench migration`.
//!
//! Every transfer goes over a unix socket pair to a destination thread that verifies the
//! stream, so the times include the receiving side and the round trip of its answers.
//! Before measuring, prints the bytes each case puts on the wire.

use criterion::{criterion_group, criterion_main, Criterion};
use pflash::migration::{commit_file, DirtyTracking};
use pflash::{Durability, Geometry, NoEvents, NoStorage, Pflash};
use pflash_migration::{incoming, Outgoing, TransferStats};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

type Dev = Pflash<Vec<u8>, DirtyTracking<NoStorage>, NoEvents>;

fn device(geometry: &Geometry) -> Dev {
    let len = geometry.size() as usize;
    let content: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let storage = DirtyTracking::new(NoStorage, geometry);
    Pflash::new(geometry.clone(), content, storage, NoEvents).unwrap()
}

/// One byte programmed in each of `blocks` different chunks, as the guest would.
fn dirty(dev: &mut Dev, blocks: u64) {
    let chunk = dev.storage().chunk_len();
    for i in 0..blocks {
        let at = i * chunk * 3 % dev.geometry().size();
        dev.write(at, &[0x10]);
        dev.write(at, &[0x5a]);
        dev.write(at, &[0xff]);
    }
}

/// A migration of `dev` with one pre-copy round; `dirty_blocks` blocks are dirtied after
/// it. Returns the stats and the time of the timed part: the whole migration, or only the
/// final round.
fn migrate(dev: &mut Dev, dirty_blocks: u64, only_final: bool) -> (TransferStats, Duration) {
    let (a, b) = UnixStream::pair().unwrap();
    let local = dev.geometry().clone();
    let dest = thread::spawn(move || {
        incoming(&b, &b, &local, Path::new("bench.fd"))
            .unwrap()
            .stats()
    });
    let started = Instant::now();
    let mut out = Outgoing::start(dev, &a, &a).unwrap();
    out.precopy_round(dev).unwrap();
    dirty(dev, dirty_blocks);
    let final_started = Instant::now();
    let stats = out.complete(dev).unwrap();
    let end = Instant::now();
    dest.join().unwrap();
    let timed = if only_final {
        end - final_started
    } else {
        end - started
    };
    (stats, timed)
}

fn report() {
    for (name, g) in [
        ("q35 528 KiB", Geometry::q35(540_672).unwrap()),
        ("arm virt 64 MiB", Geometry::arm_virt()),
    ] {
        let mut dev = device(&g);
        let (stats, elapsed) = migrate(&mut dev, 0, false);
        println!(
            "{name}: whole migration {} bytes on the wire for {} content bytes ({:.3}% framing), {:.2} ms",
            stats.wire_bytes,
            g.size(),
            (stats.wire_bytes - g.size()) as f64 * 100.0 / g.size() as f64,
            elapsed.as_secs_f64() * 1e3
        );
        for blocks in [0, 1, 10] {
            let (stats, elapsed) = migrate(&mut dev, blocks, true);
            println!(
                "{name}: final round with {blocks} dirty blocks: {} chunks, {} bytes, {:.3} ms",
                stats.final_round.chunks,
                stats.final_round.wire_bytes,
                elapsed.as_secs_f64() * 1e3
            );
        }
    }
}

fn benches(c: &mut Criterion) {
    report();
    let q35 = Geometry::q35(540_672).unwrap();
    let arm = Geometry::arm_virt();

    let mut group = c.benchmark_group("migration");
    group.sample_size(20);
    let mut dev = device(&q35);
    group.bench_function("whole-q35-528k", |b| {
        b.iter_custom(|n| (0..n).map(|_| migrate(&mut dev, 0, false).1).sum())
    });
    for blocks in [0u64, 1, 10] {
        group.bench_function(format!("final-round-q35-{blocks}-dirty"), |b| {
            b.iter_custom(|n| (0..n).map(|_| migrate(&mut dev, blocks, true).1).sum())
        });
    }
    let mut big = device(&arm);
    group.sample_size(10);
    group.bench_function("whole-arm-virt-64m", |b| {
        b.iter_custom(|n| (0..n).map(|_| migrate(&mut big, 0, false).1).sum())
    });
    for blocks in [0u64, 1, 10] {
        group.bench_function(format!("final-round-arm-virt-{blocks}-dirty"), |b| {
            b.iter_custom(|n| (0..n).map(|_| migrate(&mut big, blocks, true).1).sum())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("commit");
    group.sample_size(20);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vars.fd");
    let content = dev.memory().to_vec();
    std::fs::write(&path, &content).unwrap();
    group.bench_function("q35-528k-rename-fsync", |b| {
        b.iter(|| {
            let (storage, stats) = commit_file(&path, &content, Durability::FlushPoints).unwrap();
            drop(storage);
            stats
        })
    });
    group.finish();
}

criterion_group!(migration_benches, benches);
criterion_main!(migration_benches);
