//! Device speed: MMIO write handling in memory, and the real OVMF boot trace replayed with and
//! without file persistence. Run: `cargo bench -p pflash --bench mmio`.
//!
//! Before measuring, prints the persistence counters of one boot replay next to QEMU's
//! figure (one 512-byte pwrite per programmed byte: 16,319 writes, 8,355,328 bytes).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pflash::trace::{read_trace_file, replay, TraceLine};
use pflash::{Durability, FileStorage, Geometry, NoEvents, NoStorage, Pflash};

fn before_image() -> Vec<u8> {
    testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz"))
}

fn boot_trace() -> Vec<TraceLine> {
    read_trace_file(&testkit::trace_data("ovmf-boot-ops.txt.xz")).expect("boot trace")
}

fn report_persistence(image: &[u8], trace: &[TraceLine]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vars.fd");
    for durability in [Durability::FlushPoints, Durability::EveryOperation] {
        std::fs::write(&path, image).unwrap();
        let storage = FileStorage::open(&path, image.len(), false, durability).unwrap();
        let geometry = Geometry::q35(image.len() as u64).unwrap();
        let mut dev = Pflash::new(geometry, image.to_vec(), storage, NoEvents).unwrap();
        let start = std::time::Instant::now();
        replay(&mut dev, trace).unwrap();
        let elapsed = start.elapsed();
        let stats = dev.storage().stats();
        println!(
            "boot trace, durability {durability:?}: {} ops, {} flushes, {} write syscalls ({:.0}x fewer than QEMU's 16319), {} bytes ({:.0}x fewer than 8355328), {} fsyncs, {:.1} ms",
            stats.operations,
            stats.flushes,
            stats.write_syscalls,
            16319.0 / stats.write_syscalls as f64,
            stats.bytes_written,
            8_355_328.0 / stats.bytes_written as f64,
            stats.fsyncs,
            elapsed.as_secs_f64() * 1e3
        );
    }
}

fn benches(c: &mut Criterion) {
    let image = before_image();
    let trace = boot_trace();
    report_persistence(&image, &trace);
    let geometry = Geometry::q35(image.len() as u64).unwrap();

    let mut group = c.benchmark_group("mmio");
    // One OVMF-style byte program: command cycle, data cycle; 0xFF closes each 64-byte run.
    const PROGRAMS: u64 = 4096;
    group.throughput(Throughput::Elements(PROGRAMS * 2 + PROGRAMS / 64));
    group.bench_function("program-bytes-in-memory", |b| {
        let mut dev = Pflash::new(geometry.clone(), image.clone(), NoStorage, NoEvents).unwrap();
        b.iter(|| {
            for i in 0..PROGRAMS {
                let offset = 0x1000 + (i % 0x30000);
                dev.write(offset, &[0x10]);
                dev.write(offset, &[i as u8]);
                if i % 64 == 63 {
                    dev.write(offset, &[0xFF]);
                }
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("boot-trace");
    let ops = trace.iter().filter(|l| l.op.is_some()).count() as u64;
    group.throughput(Throughput::Elements(ops));
    group.bench_function("in-memory", |b| {
        b.iter(|| {
            let mut dev =
                Pflash::new(geometry.clone(), image.clone(), NoStorage, NoEvents).unwrap();
            replay(&mut dev, &trace).unwrap();
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vars.fd");
    group.bench_function("file-flush-points-durability", |b| {
        b.iter(|| {
            std::fs::write(&path, &image).unwrap();
            let storage =
                FileStorage::open(&path, image.len(), false, Durability::FlushPoints).unwrap();
            let mut dev = Pflash::new(geometry.clone(), image.clone(), storage, NoEvents).unwrap();
            replay(&mut dev, &trace).unwrap();
        })
    });
    group.bench_function("file-no-fsync", |b| {
        b.iter(|| {
            std::fs::write(&path, &image).unwrap();
            let storage = FileStorage::open(&path, image.len(), false, Durability::None).unwrap();
            let mut dev = Pflash::new(geometry.clone(), image.clone(), storage, NoEvents).unwrap();
            replay(&mut dev, &trace).unwrap();
        })
    });
    group.finish();
}

criterion_group! {
    name = mmio;
    config = Criterion::default().sample_size(20);
    targets = benches
}
criterion_main!(mmio);
