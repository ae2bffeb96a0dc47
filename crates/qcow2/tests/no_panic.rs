//! Damaged images: every truncation and deterministic random byte flips of small valid files
//! give `Ok` or `Err`, never a panic; what is accepted rewrites and reads back.

mod common;

use common::*;

/// Parses `file`; if accepted, reads it, rewrites it with its own content and checks that
/// the rewrite reads back the same.
fn exercise(file: &[u8]) {
    let Ok(image) = qcow2::Image::parse(file) else {
        return;
    };
    let _ = image.virtual_size();
    let snapshots: Vec<_> = (0..image.snapshots().len())
        .map(|i| image.read_snapshot(i))
        .collect();
    let Ok(content) = image.read_active() else {
        return;
    };
    let Ok(new) = image.with_active(&content) else {
        return;
    };
    let again = qcow2::Image::parse(&new).expect("a rewrite parses");
    assert!(again.read_active().expect("a rewrite reads") == content);
    assert_eq!(again.snapshots(), image.snapshots());
    for (i, old) in snapshots.iter().enumerate() {
        if let Ok(old) = old {
            assert!(again.read_snapshot(i).expect("a rewritten snapshot reads") == *old);
        }
    }
}

/// Small images: ours, and qemu-img's with snapshots and compressed clusters.
fn seeds() -> Vec<Vec<u8>> {
    let content = synthetic(6 * 1024, 5);
    let ours = qcow2::create(&content, qcow2::CreateOptions { cluster_bits: 9 });
    let dir = tempfile::tempdir().unwrap();
    let raw = write(dir.path(), "in.raw", &content);
    let img = dir.path().join("s.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=512",
        path(&raw),
        path(&img),
    ]);
    qemu_img(&["snapshot", "-c", "one", path(&img)]);
    let file = std::fs::read(&img).unwrap();
    let changed = {
        let image = qcow2::Image::parse(&file).unwrap();
        let mut c = image.read_active().unwrap();
        c[600..700].fill(0x42);
        image.with_active(&c).unwrap()
    };
    std::fs::write(&img, &changed).unwrap();
    qemu_img(&["snapshot", "-c", "two", path(&img)]);
    let v2 = dir.path().join("v2.qcow2");
    qemu_img(&[
        "convert",
        "-O",
        "qcow2",
        "-o",
        "compat=0.10,cluster_size=512",
        path(&raw),
        path(&v2),
    ]);
    vec![
        ours,
        std::fs::read(&img).unwrap(),
        std::fs::read(&v2).unwrap(),
    ]
}

#[test]
fn every_truncation() {
    for seed in seeds() {
        exercise(&seed);
        assert!(qcow2::Image::parse(&seed).is_ok());
        for len in 0..seed.len() {
            exercise(&seed[..len]);
        }
    }
}

#[test]
fn random_byte_flips() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for seed in seeds() {
        for _ in 0..3000 {
            let mut file = seed.clone();
            for _ in 0..=rng.below(3) {
                // Mostly the metadata at the front and in tables, sometimes anywhere.
                let at = if rng.below(2) == 0 {
                    rng.below(512.min(file.len() as u64))
                } else {
                    rng.below(file.len() as u64)
                } as usize;
                match rng.below(3) {
                    0 => file[at] ^= 1 << rng.below(8),
                    1 => file[at] = rng.next() as u8,
                    _ => file[at] = [0, 0xff, 0x80, 0x7f][rng.below(4) as usize],
                }
            }
            exercise(&file);
        }
    }
}
