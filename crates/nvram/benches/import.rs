//! Import benchmark: `nvram import` of 1,000 and 3,275 variables into a blank `aavmf` (64 MiB
//! file, 256 KiB variable area) and a blank `ovmf-4m` (528 KiB) store, without the file
//! handling: [`Editor::new`] on the image, [`VariableList::from_json`], [`import`] with the
//! append strategy, [`Editor::free_space`] and [`Editor::finish`], as `edit_file` does.
//!
//! Each variable is `VarNNNN` in one GUID, attributes nv,bs,rt, one byte of data: an 80-byte
//! record, so 3,275 of them fill the 256 KiB variable area up to 44 bytes.
//!
//! ```sh
//! cargo bench -p nvram --bench import -- --quick
//! ```
//!
//! With `NVRAM_BENCH_ONCE=1` each case runs once and its time is printed (for a build where
//! an import takes seconds and criterion's samples would take minutes).
//!
//! Measured on the shared 2-core development machine (issue 14): before the editor kept an
//! index (it re-parsed the whole image per variable), one run each: aavmf 1,000 5.69 s,
//! 3,275 18.8 s; ovmf-4m 1,000 0.30 s, 3,275 2.43 s. After, `-- --quick`: aavmf 1,000
//! 48 ms, 3,275 43 ms (both mostly copying and parsing the 64 MiB image once); ovmf-4m 1,000
//! 1.2 ms, 3,275 3.6 ms.

use criterion::{criterion_group, criterion_main, Criterion};
use nvram::edit::import;
use std::hint::black_box;
use varstore::edit::{Editor, Strategy};
use varstore::json::VariableList;
use varstore::Layout;

const GUID: &str = "3b0b8b7e-64a2-4c2a-a0a4-6c4d3a6e7a10";

fn list_json(count: usize) -> Vec<u8> {
    let variables: Vec<String> = (0..count)
        .map(|i| {
            format!(
                r#"{{"name": "Var{i:04}", "guid": "{GUID}", "attr": 7, "data": "{:02x}"}}"#,
                i % 256
            )
        })
        .collect();
    format!(
        r#"{{"version": 2, "variables": [{}]}}"#,
        variables.join(",")
    )
    .into_bytes()
}

fn run(image: &[u8], json: &[u8]) -> Vec<u8> {
    let mut editor = Editor::new(image).expect("a blank store");
    let list = VariableList::from_json(json).expect("a variable list");
    let report = import(&mut editor, &list, Strategy::Append, false).expect("imports");
    assert_eq!(report.added, list.variables.len());
    black_box(editor.free_space().expect("parses"));
    editor.finish()
}

fn benches(c: &mut Criterion) {
    let cases: Vec<(&str, usize, Vec<u8>, Vec<u8>)> = ["aavmf", "ovmf-4m"]
        .iter()
        .flat_map(|layout| {
            let image = Layout::by_name(layout).expect("built in").create();
            [1000, 3275].map(|n| (*layout, n, image.clone(), list_json(n)))
        })
        .collect();
    if std::env::var_os("NVRAM_BENCH_ONCE").is_some() {
        for (layout, n, image, json) in &cases {
            let start = std::time::Instant::now();
            black_box(run(image, json));
            println!(
                "import/{layout}/{n}: {:.3} s (one run)",
                start.elapsed().as_secs_f64()
            );
        }
        return;
    }
    let mut group = c.benchmark_group("import");
    group.sample_size(10);
    for (layout, n, image, json) in &cases {
        group.bench_function(format!("{layout}/{n}"), |b| {
            b.iter(|| run(black_box(image), black_box(json)))
        });
    }
    group.finish();
}

criterion_group!(import_benches, benches);
criterion_main!(import_benches);
