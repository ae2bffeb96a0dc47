//! Parse and list benchmarks: `cargo bench -p varstore --bench parse`.
//!
//! * `parse/ovmf-4m-ms`: `Varstore::parse` of Debian's `OVMF_VARS_4M.ms.fd` (528 KiB, 57
//!   records, Secure Boot keys enrolled);
//! * `list/ovmf-4m-ms`: parse, then `live_variables` and `decode::summary` of each, which is
//!   what `nvram list` does;
//! * `parse/aavmf-blank`: parse of the blank 64 MiB `aavmf` layout (mostly the scan of the
//!   zero padding after the volume).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use varstore::{decode, Layout, Varstore};

const OVMF_4M_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

fn benches(c: &mut Criterion) {
    let image = std::fs::read(OVMF_4M_MS)
        .unwrap_or_else(|e| panic!("{OVMF_4M_MS}: {e} (install Debian's `ovmf` package)"));
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(image.len() as u64));
    group.bench_function("ovmf-4m-ms", |b| {
        b.iter(|| Varstore::parse(black_box(&image)).expect("parses"))
    });
    group.finish();

    let mut group = c.benchmark_group("list");
    group.throughput(Throughput::Bytes(image.len() as u64));
    group.bench_function("ovmf-4m-ms", |b| {
        b.iter(|| {
            let store = Varstore::parse(black_box(&image)).expect("parses");
            store
                .live_variables()
                .into_iter()
                .map(|r| decode::summary(r).map_or(0, |s| s.len()))
                .sum::<usize>()
        })
    });
    group.finish();

    let blank = Layout::by_name("aavmf").expect("built-in layout").create();
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(blank.len() as u64));
    group.sample_size(20);
    group.bench_function("aavmf-blank", |b| {
        b.iter(|| Varstore::parse(black_box(&blank)).expect("parses"))
    });
    group.finish();
}

criterion_group!(parse, benches);
criterion_main!(parse);
