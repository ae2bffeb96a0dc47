//! Device speed: MMIO write handling in memory, and the real OVMF boot trace replayed with and
//! without file persistence. Run: `cargo bench -p pflash --bench mmio`.
//!
//! Before measuring, prints the persistence counters of one boot replay next to QEMU's
//! figure (one 512-byte pwrite per programmed byte: 16,319 writes, 8,355,328 bytes), and
//! the latency of the MMIO write handler (`Pflash::write`) over the boot trace's 32,912
//! writes with persistence on: p50, p99 and maximum, for the background writer and for the
//! handler writing the file itself.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pflash::{
    BackgroundStorage, Durability, FileStorage, Geometry, NoEvents, NoStorage, Pflash, Storage,
};
use pflash_trace::{read_trace_file, replay, TraceLine, TraceOp};
use std::time::{Duration, Instant};

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

/// Replays `trace` timing every MMIO write; returns the sorted latencies.
fn write_latencies<S: Storage>(
    dev: &mut Pflash<Vec<u8>, S, NoEvents>,
    trace: &[TraceLine],
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(trace.len());
    for line in trace {
        match line.op {
            Some(TraceOp::Write {
                offset,
                size,
                value,
            }) => {
                let bytes = value.to_le_bytes();
                let started = Instant::now();
                dev.write(offset, &bytes[..usize::from(size)]);
                latencies.push(started.elapsed());
            }
            Some(TraceOp::Read { offset, size, .. }) => {
                let mut b = [0u8; 8];
                dev.read(offset, &mut b[..usize::from(size)]);
            }
            Some(TraceOp::Reset) => dev.reset(),
            None => {}
        }
    }
    latencies.sort_unstable();
    latencies
}

fn report_handler_latency(image: &[u8], trace: &[TraceLine]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vars.fd");
    let geometry = Geometry::q35(image.len() as u64).unwrap();
    let print = |name: &str, l: &[Duration]| {
        let at = |q: f64| l[((l.len() - 1) as f64 * q) as usize].as_nanos();
        println!(
            "MMIO write handler, boot trace, {name}: {} writes, p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
            l.len(),
            at(0.5),
            at(0.99),
            at(0.999),
            l[l.len() - 1].as_nanos()
        );
    };
    for durability in [Durability::FlushPoints, Durability::None] {
        std::fs::write(&path, image).unwrap();
        let file = FileStorage::open(&path, image.len(), false, durability).unwrap();
        let storage = BackgroundStorage::spawn(file, Default::default()).unwrap();
        let mut dev = Pflash::new(geometry.clone(), image.to_vec(), storage, NoEvents).unwrap();
        let l = write_latencies(&mut dev, trace);
        dev.storage_mut().flush().unwrap();
        drop(dev);
        print(&format!("background writer, durability {durability:?}"), &l);

        std::fs::write(&path, image).unwrap();
        let file = FileStorage::open(&path, image.len(), false, durability).unwrap();
        let mut dev = Pflash::new(geometry.clone(), image.to_vec(), file, NoEvents).unwrap();
        let l = write_latencies(&mut dev, trace);
        print(
            &format!("inline FileStorage, durability {durability:?}"),
            &l,
        );
    }
}

fn benches(c: &mut Criterion) {
    let image = before_image();
    let trace = boot_trace();
    report_persistence(&image, &trace);
    report_handler_latency(&image, &trace);
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
    group.bench_function("file-background-writer", |b| {
        b.iter(|| {
            std::fs::write(&path, &image).unwrap();
            let file =
                FileStorage::open(&path, image.len(), false, Durability::FlushPoints).unwrap();
            let storage = BackgroundStorage::spawn(file, Default::default()).unwrap();
            let mut dev = Pflash::new(geometry.clone(), image.clone(), storage, NoEvents).unwrap();
            replay(&mut dev, &trace).unwrap();
            // Until the file is written: the whole cost, not only the handler's.
            dev.storage_mut().flush().unwrap();
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
