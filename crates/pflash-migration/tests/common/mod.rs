//! Helpers shared by the migration test files: devices, a live migration over a socket
//! pair, and a source stopped in the middle of a buffered write.
#![allow(dead_code)] // each test file uses its own subset

use pflash::migration::{Deferred, DirtyTracking};
use pflash::{FileStorage, Geometry, NoEvents, NoStorage, Pflash, PflashState};
use pflash_migration::{incoming, MigrationError, Outgoing, TransferStats};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;

pub type Dev = Pflash<Vec<u8>, DirtyTracking<NoStorage>, NoEvents>;
/// A migration destination before its commit point.
pub type DestDev = Pflash<Vec<u8>, Deferred<FileStorage>, NoEvents>;

pub const VARS: u64 = 540_672;

pub fn device(geometry: Geometry, content: Vec<u8>) -> Dev {
    let storage = DirtyTracking::new(NoStorage, &geometry);
    Pflash::new(geometry, content, storage, NoEvents).unwrap()
}

pub fn q35(content: Vec<u8>) -> Dev {
    device(Geometry::q35(content.len() as u64).unwrap(), content)
}

/// Live-migrates `src` to a new device of geometry `local` over a unix socket pair, with
/// `precopy` pre-copy rounds. On success returns the destination's device.
pub fn live(
    src: &mut Dev,
    local: &Geometry,
    precopy: u32,
) -> Result<(DestDev, TransferStats), MigrationError> {
    let (a, b) = UnixStream::pair().unwrap();
    let local = local.clone();
    let dest = thread::spawn(move || incoming(&b, &b, &local, Path::new("dest.fd")));
    let result = (|| {
        let mut out = Outgoing::start(src, &a, &a)?;
        for _ in 0..precopy {
            out.precopy_round(src)?;
        }
        out.complete(src)
    })();
    drop(a);
    let received = dest.join().unwrap();
    match (result, received) {
        (Ok(stats), Ok(inc)) => Ok((inc.into_device(Deferred::new(), NoEvents), stats)),
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    }
}

/// Back into a tracked device (the next hop's source).
pub fn rehost(dev: DestDev) -> Dev {
    let state = dev.state();
    let geometry = dev.geometry().clone();
    let (content, _, _) = dev.into_parts();
    let storage = DirtyTracking::new(NoStorage, &geometry);
    Pflash::from_state(geometry, content, &state, storage, NoEvents).unwrap()
}

/// A source device in the middle of a buffered write, with its state and content.
pub fn busy_source() -> (Dev, PflashState, Vec<u8>) {
    let before = testkit::unxz(&testkit::trace_data("ovmf-boot-vars-before.fd.xz"));
    let mut dev = q35(before);
    dev.write(0x3000, &[0xe8]);
    dev.write(0x3000, &[0x3]);
    dev.write(0x3000, &[0xaa]);
    let state = dev.state();
    let content = dev.memory().to_vec();
    (dev, state, content)
}
