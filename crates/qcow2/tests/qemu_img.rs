//! Differential tests against the real `qemu-img` (qemu-utils 10.0): images it makes are read
//! like it reads them, and files this crate writes pass `qemu-img check` and read back.

mod common;

use std::path::Path;

use common::*;

const OVMF_4M: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
const OVMF_2M: &str = "/usr/share/OVMF/OVMF_VARS.fd";
const AAVMF: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";

/// `content` with a few bytes changed, one non-zero cluster zeroed and one zero cluster
/// filled (where the content has them).
fn edited(content: &[u8], cluster: usize) -> Vec<u8> {
    let mut new = content.to_vec();
    let len = new.len();
    new[17] ^= 0x5a;
    new[len / 2] ^= 1;
    new[len - 1] ^= 0x80;
    let clusters = len / cluster;
    if let Some(c) = (1..clusters).find(|&c| new[c * cluster..][..cluster].iter().any(|&b| b != 0))
    {
        new[c * cluster..][..cluster].fill(0);
    }
    if let Some(c) = (0..clusters)
        .rev()
        .find(|&c| new[c * cluster..][..cluster].iter().all(|&b| b == 0))
    {
        new[c * cluster..][..cluster]
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = i as u8 | 1);
    }
    new
}

/// Converts `content` with qemu-img, reads it, rewrites it with edited content, and checks
/// the result with qemu-img.
fn roundtrip(dir: &Path, content: &[u8], cluster: usize, compat: &str, sparse: &str) {
    let tag = format!("c{cluster}-{compat}-S{sparse}");
    let raw = write(dir, &format!("{tag}.in"), content);
    let img = dir.join(format!("{tag}.qcow2"));
    let opts = format!("cluster_size={cluster},compat={compat}");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        &opts,
        "-S",
        sparse,
        path(&raw),
        path(&img),
    ]);
    let file = std::fs::read(&img).unwrap();
    let image = qcow2::Image::parse(&file).unwrap_or_else(|e| panic!("{tag}: {e}"));
    assert_eq!(image.virtual_size(), content.len() as u64, "{tag}");
    assert_eq!(image.cluster_size(), cluster as u64, "{tag}");
    let active = image.read_active().unwrap();
    assert!(
        active == to_raw(&img, dir),
        "{tag}: read_active differs from qemu-img convert"
    );
    assert!(
        active == content,
        "{tag}: read_active differs from the raw input"
    );

    let new = edited(content, cluster);
    let rewritten = image
        .with_active(&new)
        .unwrap_or_else(|e| panic!("{tag}: {e}"));
    let out = write(dir, &format!("{tag}.new.qcow2"), &rewritten);
    assert_clean(&out);
    assert!(
        to_raw(&out, dir) == new,
        "{tag}: qemu-img reads other content than written"
    );
    assert!(
        qcow2::Image::parse(&rewritten)
            .unwrap()
            .read_active()
            .unwrap()
            == new,
        "{tag}"
    );
    for key in ["virtual-size", "cluster-size", "compat"] {
        assert_eq!(info_field(&out, key), info_field(&img, key), "{tag}: {key}");
    }
    // Writing the same content again changes nothing that matters and stays clean.
    let again = qcow2::Image::parse(&rewritten)
        .unwrap()
        .with_active(&new)
        .unwrap();
    assert_eq!(
        again, rewritten,
        "{tag}: a rewrite of a rewrite is not stable"
    );
}

fn matrix(content: &[u8], clusters: &[usize]) {
    let dir = tempfile::tempdir().unwrap();
    for &cluster in clusters {
        for compat in ["0.10", "1.1"] {
            roundtrip(dir.path(), content, cluster, compat, "4096");
        }
    }
    // Fully allocated: zero clusters stored as data.
    roundtrip(dir.path(), content, 4096, "1.1", "0");
}

#[test]
fn ovmf_4m_template() {
    matrix(&template(OVMF_4M), &[512, 4096, 65536, 2 << 20]);
}

#[test]
fn ovmf_2m_template() {
    matrix(&template(OVMF_2M), &[512, 4096, 65536, 2 << 20]);
}

#[test]
fn synthetic_with_zero_runs() {
    matrix(&synthetic(300 * 1024, 7), &[512, 4096, 65536]);
}

#[test]
fn aavmf_64m() {
    // scripts/install-test-deps installs Debian's qemu-efi-aarch64: without it the 64 MiB
    // case fails rather than passing unrun.
    let content = std::fs::read(AAVMF).unwrap_or_else(|e| {
        panic!("{AAVMF}: {e}: the 64 MiB case needs Debian's qemu-efi-aarch64 package installed")
    });
    let dir = tempfile::tempdir().unwrap();
    roundtrip(dir.path(), &content, 4096, "1.1", "4096");
    roundtrip(dir.path(), &content, 65536, "0.10", "4096");
}

/// Compressed (deflate) clusters are read; the rewrite stores them uncompressed.
#[test]
fn compressed_image() {
    let dir = tempfile::tempdir().unwrap();
    let content = synthetic(200 * 1024, 11);
    let raw = write(dir.path(), "in.raw", &content);
    let img = dir.path().join("c.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=4096",
        path(&raw),
        path(&img),
    ]);
    let file = std::fs::read(&img).unwrap();
    let image = qcow2::Image::parse(&file).unwrap();
    assert!(image.read_active().unwrap() == content);
    let new = edited(&content, 4096);
    let out = write(dir.path(), "c.new.qcow2", &image.with_active(&new).unwrap());
    assert_clean(&out);
    assert!(to_raw(&out, dir.path()) == new);
}

/// Internal snapshots survive rewrites: listed the same, restorable with `snapshot -a`.
fn snapshots_case(compat: &str, cluster: usize) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let v1 = template(OVMF_4M);
    let raw = write(d, "v1.raw", &v1);
    let img = d.join("s.qcow2");
    let opts = format!("cluster_size={cluster},compat={compat}");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        &opts,
        path(&raw),
        path(&img),
    ]);
    qemu_img(&["snapshot", "-c", "s1", path(&img)]);

    let rewrite = |new: &[u8]| {
        let file = std::fs::read(&img).unwrap();
        let image = qcow2::Image::parse(&file).unwrap();
        let before = image.snapshots().to_vec();
        let out = image.with_active(new).unwrap();
        let reparsed = qcow2::Image::parse(&out).unwrap();
        assert_eq!(reparsed.snapshots(), &before[..], "snapshot table changed");
        std::fs::write(&img, &out).unwrap();
        assert_clean(&img);
    };
    let v2 = edited(&v1, cluster);
    rewrite(&v2);
    qemu_img(&["snapshot", "-c", "s2", path(&img)]);
    let mut v3 = v2.clone();
    v3[1000..1100].fill(0x33);
    v3[300_000..300_010].fill(0);
    rewrite(&v3);
    // And once more with the same content: a file with two snapshots sharing everything.
    rewrite(&v3);

    let list = qemu_img(&["snapshot", "-l", path(&img)]);
    let tags: Vec<(String, String)> = list
        .lines()
        .skip(2)
        .map(|l| {
            let mut w = l.split_whitespace();
            (
                w.next().unwrap_or("").to_string(),
                w.next().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        tags,
        [("1".into(), "s1".into()), ("2".into(), "s2".into())],
        "{list}"
    );

    let file = std::fs::read(&img).unwrap();
    let image = qcow2::Image::parse(&file).unwrap();
    assert!(image.read_active().unwrap() == v3);
    assert!(image.read_snapshot(0).unwrap() == v1);
    assert!(image.read_snapshot(1).unwrap() == v2);
    assert!(to_raw(&img, d) == v3);
    for (name, want) in [("s1", &v1), ("s2", &v2)] {
        let copy = d.join(format!("{name}.qcow2"));
        std::fs::copy(&img, &copy).unwrap();
        qemu_img(&["snapshot", "-a", name, path(&copy)]);
        assert_clean(&copy);
        assert!(
            to_raw(&copy, d) == *want,
            "snapshot {name} restored other content"
        );
    }
    // Deleting a snapshot in QEMU keeps the refcounts consistent (they were exact).
    qemu_img(&["snapshot", "-d", "s1", path(&img)]);
    assert_clean(&img);
    assert!(to_raw(&img, d) == v3);
}

#[test]
fn snapshots_v3_4k() {
    snapshots_case("1.1", 4096);
}

#[test]
fn snapshots_v2_64k() {
    snapshots_case("0.10", 65536);
}

#[test]
fn snapshots_v3_512() {
    snapshots_case("1.1", 512);
}

#[test]
fn create_is_clean_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let content = template(OVMF_4M);
    for bits in [12, 16] {
        let file = qcow2::create(&content, qcow2::CreateOptions { cluster_bits: bits });
        let out = write(dir.path(), &format!("created{bits}.qcow2"), &file);
        assert_clean(&out);
        assert_eq!(info_field(&out, "virtual-size"), content.len().to_string());
        assert_eq!(info_field(&out, "cluster-size"), (1u64 << bits).to_string());
        assert_eq!(info_field(&out, "compat"), "1.1");
        assert!(to_raw(&out, dir.path()) == content);
        // qemu-img can write to it and take snapshots.
        qemu_img(&["snapshot", "-c", "x", path(&out)]);
        assert_clean(&out);
    }
}

fn refusal(make: &[&str], file: &Path, words: &str) {
    qemu_img(make);
    let bytes = std::fs::read(file).unwrap();
    let err = qcow2::Image::parse(&bytes).unwrap_err();
    assert!(
        matches!(err, qcow2::Qcow2Error::Unsupported { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains(words),
        "{err} does not name {words}"
    );
}

#[test]
fn refusals_name_the_feature() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    qemu_img(&["create", "-f", "qcow2", path(&d("base.qcow2")), "1M"]);
    refusal(
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            path(&d("base.qcow2")),
            "-F",
            "qcow2",
            path(&d("b.qcow2")),
        ],
        &d("b.qcow2"),
        "a backing file (",
    );
    refusal(
        &[
            "create",
            "-f",
            "qcow2",
            "--object",
            "secret,id=sec0,data=abc",
            "-o",
            "encrypt.format=luks,encrypt.key-secret=sec0",
            path(&d("e.qcow2")),
            "1M",
        ],
        &d("e.qcow2"),
        "encryption (LUKS)",
    );
    let data = format!("data_file={}", path(&d("x.data")));
    refusal(
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            &data,
            path(&d("x.qcow2")),
            "1M",
        ],
        &d("x.qcow2"),
        "external data file",
    );
    refusal(
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on",
            path(&d("l.qcow2")),
            "1M",
        ],
        &d("l.qcow2"),
        "extended L2",
    );
}

#[test]
fn zstd_compressed_clusters_are_refused_plain_zstd_images_read() {
    let dir = tempfile::tempdir().unwrap();
    let content = synthetic(64 * 1024, 3);
    let raw = write(dir.path(), "in.raw", &content);
    let plain = dir.path().join("z.qcow2");
    let o = "compression_type=zstd,cluster_size=4096";
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        o,
        path(&raw),
        path(&plain),
    ]);
    let file = std::fs::read(&plain).unwrap();
    let image = qcow2::Image::parse(&file).unwrap();
    assert!(image.read_active().unwrap() == content);
    let out = write(
        dir.path(),
        "z.new.qcow2",
        &image.with_active(&content).unwrap(),
    );
    assert_clean(&out);
    assert_eq!(info_field(&out, "compression-type"), "zstd");

    let packed = dir.path().join("zc.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        o,
        path(&raw),
        path(&packed),
    ]);
    let file = std::fs::read(&packed).unwrap();
    let err = qcow2::Image::parse(&file)
        .and_then(|i| i.read_active())
        .unwrap_err();
    assert!(err.to_string().contains("zstd"), "{err}");
}

#[test]
fn wrong_length_is_refused() {
    let file = qcow2::create(&[1u8; 8192], qcow2::CreateOptions::default());
    let image = qcow2::Image::parse(&file).unwrap();
    let err = image.with_active(&[0u8; 4096]).unwrap_err();
    assert_eq!(
        err,
        qcow2::Qcow2Error::SizeMismatch {
            expected: 8192,
            got: 4096
        }
    );
}

/// QEMU 10's system emulator: on the PATH, or where `scripts/install-test-deps` unpacks it.
fn qemu_system() -> std::path::PathBuf {
    let peers = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/peers/qemu-10.0/bin/qemu-system-x86_64");
    if peers.exists() {
        return peers;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.exists());
    on_path.unwrap_or_else(|| {
        panic!(
            "qemu-system-x86_64 is missing: run scripts/install-test-deps (it unpacks QEMU 10 \
             into target/peers/) or install qemu-system-x86; this test does not skip"
        )
    })
}

/// Runs HMP `commands` on a QEMU with no machine and only `image` as a drive; returns the
/// monitor's output, failing if QEMU does or the output mentions an error.
fn monitor(image: &Path, commands: &str) -> String {
    use std::io::Write;
    let drive = format!("if=none,id=d,file={},format=qcow2", path(image));
    let mut child = std::process::Command::new(qemu_system())
        .args([
            "-machine",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-monitor",
            "stdio",
        ])
        .args(["-drive", &drive])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start qemu-system-x86_64");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{commands}\nquit\n").as_bytes())
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "QEMU failed on {commands}: {text}");
    assert!(
        !text.to_lowercase().contains("error"),
        "QEMU reports an error on {commands}: {text}"
    );
    text
}

/// A snapshot with VM state (`savevm`, which stores it past the end of the disk in the
/// snapshot's L1 range) survives a rewrite: QEMU still loads it.
#[test]
fn savevm_state_survives() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let v1 = template(OVMF_2M);
    let raw = write(d, "v1.raw", &v1);
    for compat in ["1.1", "0.10"] {
        let img = d.join(format!("vm-{compat}.qcow2"));
        let opts = format!("cluster_size=4096,compat={compat}");
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            &opts,
            path(&raw),
            path(&img),
        ]);
        monitor(&img, "savevm vm1");
        let file = std::fs::read(&img).unwrap();
        let image = qcow2::Image::parse(&file).unwrap();
        let before = image.snapshots().to_vec();
        assert_eq!(before.len(), 1);
        assert!(before[0].vm_state_size > 0, "{before:?}");
        let v2 = edited(&v1, 4096);
        let out = image.with_active(&v2).unwrap();
        assert_eq!(qcow2::Image::parse(&out).unwrap().snapshots(), &before[..]);
        std::fs::write(&img, &out).unwrap();
        assert_clean(&img);
        assert!(to_raw(&img, d) == v2);
        monitor(&img, "loadvm vm1");
        assert_clean(&img);
        assert!(
            to_raw(&img, d) == v1,
            "{compat}: loadvm restored other content"
        );
    }
}

/// A persistent dirty bitmap is dropped (its data would be stale) and the dirty bit and
/// autoclear bits are cleared; the feature-name table survives.
#[test]
fn bitmaps_dropped_dirty_bit_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let content = template(OVMF_2M);
    let raw = write(d, "in.raw", &content);
    let img = d.join("b.qcow2");
    // qemu-img create writes a feature-name table (convert does not, nor does create with
    // small clusters); -n converts into it.
    let size = content.len().to_string();
    qemu_img(&["create", "-f", "qcow2", path(&img), &size]);
    qemu_img(&[
        "convert",
        "-n",
        "-f",
        "raw",
        "-O",
        "qcow2",
        path(&raw),
        path(&img),
    ]);
    qemu_img(&["bitmap", "--add", path(&img), "b0"]);
    assert!(qemu_img(&["info", path(&img)]).contains("b0"));
    let mut file = std::fs::read(&img).unwrap();
    assert!(
        file.windows(5).any(|w| w == b"dirty"),
        "no feature-name table"
    );
    file[79] |= 1; // incompatible_features bit 0: dirty
    let image = qcow2::Image::parse(&file).unwrap();
    let new = edited(&content, 4096);
    let out = write(d, "b.new.qcow2", &image.with_active(&new).unwrap());
    assert_clean(&out);
    let info = qemu_img(&["info", "--output=json", path(&out)]);
    assert!(
        !info.contains("bitmaps") && !info.contains("\"b0\""),
        "{info}"
    );
    assert_eq!(info_field(&out, "dirty-flag"), "false");
    let rewritten = std::fs::read(&out).unwrap();
    assert_eq!(&rewritten[72..80], &[0u8; 8], "incompatible features");
    assert_eq!(&rewritten[88..96], &[0u8; 8], "autoclear features");
    assert!(
        rewritten.windows(5).any(|w| w == b"dirty"),
        "feature-name table dropped"
    );
    assert!(to_raw(&out, d) == new);
}

/// Every refcount width qemu-img offers is written back with that width and checks clean;
/// clusters are shared only as far as the width can count.
#[test]
fn refcount_widths() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let content = template(OVMF_2M);
    let raw = write(d, "in.raw", &content);
    for bits in [1, 2, 4, 8, 16, 32, 64] {
        let img = d.join(format!("r{bits}.qcow2"));
        let opts = format!("refcount_bits={bits},cluster_size=4096");
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            &opts,
            path(&raw),
            path(&img),
        ]);
        if bits >= 8 {
            qemu_img(&["snapshot", "-c", "s", path(&img)]);
        }
        let file = std::fs::read(&img).unwrap();
        let image = qcow2::Image::parse(&file).unwrap();
        let new = edited(&content, 4096);
        let out = write(
            d,
            &format!("r{bits}.new.qcow2"),
            &image.with_active(&new).unwrap(),
        );
        assert_clean(&out);
        assert_eq!(info_field(&out, "refcount-bits"), bits.to_string());
        assert!(to_raw(&out, d) == new, "refcount_bits={bits}");
        if bits >= 8 {
            let again = std::fs::read(&out).unwrap();
            let image = qcow2::Image::parse(&again).unwrap();
            assert!(
                image.read_snapshot(0).unwrap() == content,
                "refcount_bits={bits}"
            );
        }
    }
}
