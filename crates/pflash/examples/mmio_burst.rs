//! A burst of MMIO writes on a flash persisted by a [`BackgroundStorage`], bracketed by two
//! recognisable system calls, so that `strace` can show what the calling thread did in
//! between:
//!
//! ```text
//! cargo build --release -p pflash --example mmio_burst
//! strace -f -o /tmp/burst.strace target/release/examples/mmio_burst [PROGRAMS] [inline|idle]
//! ```
//!
//! The burst is `PROGRAMS` (default 20,000) OVMF-style byte programs, each its own command
//! sequence (0x10, data, 0xFF: a flush point), then a sector erase. The markers are
//! `stat("/pflash-burst-start")` and `stat("/pflash-burst-end")`; the program prints its
//! thread id so the lines of the calling thread can be picked out. With `inline` the
//! handler writes the file itself (`FileStorage`), for comparison. With `idle` the burst
//! starts after the writer has parked (1.5 s idle): its first flush point wakes it.

use pflash::{BackgroundStorage, Durability, FileStorage, Geometry, NoEvents, Pflash, Storage};

const LEN: usize = 0x84000;

fn burst<S: Storage>(dev: &mut Pflash<Vec<u8>, S, NoEvents>, programs: u64) {
    for i in 0..programs {
        let offset = 0x1000 + (i % 0x3_0000);
        dev.write(offset, &[0x10]);
        dev.write(offset, &[i as u8]);
        dev.write(offset, &[0xff]);
    }
    dev.write(0x4_0000, &[0x20]);
    dev.write(0x4_0000, &[0xd0]);
    dev.write(0x4_0000, &[0xff]);
}

fn marker(name: &str) {
    let _ = std::fs::metadata(name);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let programs: u64 = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let mode = args.next().unwrap_or_default();
    let inline = mode == "inline";
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("vars.fd");
    std::fs::write(&path, vec![0xff; LEN])?;
    let geometry = Geometry::q35(LEN as u64)?;
    let file = FileStorage::open(&path, LEN, false, Durability::FlushPoints)?;
    let content = file.read_content()?;
    // The main thread's id is the process id.
    println!("calling thread: {}", std::process::id());
    if inline {
        let mut dev = Pflash::new(geometry, content, file, NoEvents)?;
        burst(&mut dev, 16); // warm-up, as below
        marker("/pflash-burst-start");
        burst(&mut dev, programs);
        marker("/pflash-burst-end");
        println!("{:?}", dev.storage().stats());
    } else {
        let storage = BackgroundStorage::spawn(file, Default::default())?;
        let mut dev = Pflash::new(geometry, content, storage, NoEvents)?;
        // Warm-up: the first operations fault in the backlog's pages and start the writer.
        burst(&mut dev, 16);
        dev.storage_mut().flush()?;
        if mode == "idle" {
            std::thread::sleep(std::time::Duration::from_millis(1500));
        }
        marker("/pflash-burst-start");
        burst(&mut dev, programs);
        marker("/pflash-burst-end");
        dev.storage_mut().flush()?;
        println!("{:?}", dev.storage().stats());
        assert!(std::fs::read(&path)? == dev.memory());
    }
    Ok(())
}
