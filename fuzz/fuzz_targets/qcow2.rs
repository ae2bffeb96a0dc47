//! Parses arbitrary bytes as a qcow2 image. `qcow2::Image::parse` promises never to panic and
//! to allocate only a small multiple of the input; what it accepts must read, rewrite with its
//! own content, and the rewrite must parse back to the same content and snapshot table.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = qcow2::is_qcow2(data);
    let image = match qcow2::Image::parse(data) {
        Ok(image) => image,
        Err(err) => {
            let _ = err.to_string();
            return;
        }
    };
    let _ = (image.virtual_size(), image.cluster_size(), image.version());
    let snapshots: Vec<_> = (0..image.snapshots().len())
        .map(|i| image.read_snapshot(i))
        .collect();
    // A compressed cluster whose data is not valid deflate is only found when read.
    let Ok(content) = image.read_active() else {
        return;
    };
    assert_eq!(content.len() as u64, image.virtual_size());
    let new = match image.with_active(&content) {
        Ok(new) => new,
        // Snapshot tables with more cluster references than the rewrite's work bound, or a
        // snapshot's broken compressed cluster, are refused rather than rewritten.
        Err(qcow2::Qcow2Error::Unsupported { .. } | qcow2::Qcow2Error::Invalid { .. }) => return,
        Err(err) => panic!("unexpected rewrite error: {err}"),
    };
    let again = qcow2::Image::parse(&new).expect("a rewrite parses");
    assert_eq!(again.virtual_size(), image.virtual_size());
    assert_eq!(again.snapshots(), image.snapshots());
    assert!(again.read_active().expect("a rewrite reads") == content);
    // Every snapshot that could be read reads the same from the rewrite.
    for (i, old) in snapshots.iter().enumerate() {
        if let Ok(old) = old {
            assert!(again.read_snapshot(i).expect("a rewritten snapshot reads") == *old);
        }
    }
    // Rewriting a rewrite gives the same file: the layout depends only on the content.
    assert!(again.with_active(&content).expect("a rewrite rewrites") == new);
});
