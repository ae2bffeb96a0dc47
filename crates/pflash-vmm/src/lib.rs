//! A small KVM VMM that runs the [`pflash`] device, written as the reference for a VMM
//! author (Cloud Hypervisor, crosvm, Firecracker-style VMMs on rust-vmm) wiring the device
//! into their own VMM; and the guest program it runs, which also runs unchanged under
//! QEMU's own `cfi.pflash01` so that both can be compared byte for byte.
//!
//! # Wiring the device
//!
//! Everything the VMM does with the device is in [`flash`] (about a hundred lines) and the
//! exit handling of [`vm::Vm::run`]:
//!
//! 1. **Memory.** The VMM allocates the flash content itself, page-aligned
//!    ([`flash::SlotMemory`], an anonymous mapping), and hands it to
//!    [`pflash::Pflash::new`], which takes any `AsRef<[u8]> + AsMut<[u8]>`. The device
//!    programs and erases that memory in place; the VMM registers the very same pages with
//!    KVM. Nothing is copied at a mode change.
//! 2. **Events.** The VMM implements [`pflash::PflashEvents`]; the one method it must act on
//!    is [`array_mode_changed`](pflash::PflashEvents::array_mode_changed). The device calls
//!    it from inside `read`/`write`, so the hook only records the new mode
//!    ([`flash::ModeEvents`]) and the run loop applies it before the next `KVM_RUN`:
//!    - entering array mode: map the memory as a `KVM_MEM_READONLY` slot at the flash's
//!      guest address. Guest reads are then plain memory reads with no exit, and guest
//!      writes (the next command) exit as MMIO;
//!    - leaving array mode: delete the slot (`memory_size` 0), so that reads exit too and
//!      return the status register, CFI data or ids from [`pflash::Pflash::read`].
//!
//!    The other hooks (invalid command, program error, erase, storage error) are for
//!    metrics and logs.
//! 3. **MMIO exits.** `KVM_EXIT_MMIO` inside the flash range goes to
//!    [`pflash::Pflash::read`] / [`pflash::Pflash::write`] with the offset from the flash's
//!    base and the exit's data slice (1, 2, 4 or 8 bytes, guest byte order). While the slot
//!    is mapped no read can arrive; [`exits::Exits::array_mode_read_exits`] counts any that
//!    does, and the tests require 0.
//! 4. **Persistence.** A [`pflash::BackgroundStorage`] around a [`pflash::FileStorage`]
//!    writes every program and erase to the varstore file in order from a writer thread, so
//!    the exit handler makes no system call (`run --writer inline` writes from the vCPU
//!    thread at each flush point instead); the VMM flushes it when the guest stops. A writer
//!    that parked after a second without work is woken by the run loop
//!    ([`flash::VarsFlash::kick`] after each flash exit, before `KVM_RUN`; the storage's
//!    [`pflash::Wake::ByCaller`]), never by the device's handler, which then makes a system
//!    call only when a full backlog makes it wait.
//!
//! A Cloud Hypervisor or crosvm adopter would do the same: hand its own mapping of the
//! flash region to `Pflash::new`, implement `PflashEvents::array_mode_changed` to add or
//! remove the read-only memory region through its memory manager, route the MMIO exits of
//! the region to `read`/`write` (or register the device on a rust-vmm `vm-device` bus with
//! the `pflash` crate's `vm-device` feature), and persist with `BackgroundStorage`; a
//! crosvm-style pflash that traps every read and writes the file itself would delete its
//! command state machine and its file handling.
//!
//! ```
//! use pflash::{Geometry, NoStorage, Pflash, PflashEvents};
//!
//! /// What a VMM's hook looks like: record, apply between exits.
//! #[derive(Default)]
//! struct SlotEvents { pending: Option<bool> }
//! impl PflashEvents for SlotEvents {
//!     fn array_mode_changed(&mut self, array_mode: bool) { self.pending = Some(array_mode); }
//! }
//!
//! // In a VMM the memory is the mapping registered with KVM; a Vec does for the example.
//! let mut flash = Pflash::new(Geometry::q35(0x84000).unwrap(), vec![0xff; 0x84000],
//!                             NoStorage, SlotEvents::default()).unwrap();
//! flash.write(0x100, &[0x10]); // MMIO write exit: byte program command
//! assert_eq!(flash.events_mut().pending.take(), Some(false)); // remove the slot
//! flash.write(0x100, &[0x42]);
//! flash.write(0x100, &[0xff]); // back to read array
//! assert_eq!(flash.events_mut().pending.take(), Some(true)); // map it again
//! assert_eq!(flash.memory()[0x100], 0x42); // what the guest now reads without an exit
//! ```
//!
//! # The VMM
//!
//! [`layout`] is QEMU q35's memory map for the two flashes (code flash ending at 4 GiB,
//! vars flash directly below), plus 16 MiB of RAM at 0. [`vm`] creates the VM with one
//! vCPU at the reset vector (no in-kernel irqchip: `hlt` exits), COM1 output and QEMU's
//! `isa-debug-exit` port, and counts exits by kind ([`exits`]). [`vm::Vm::run`] takes a
//! predicate checked after every flash access: the point where a VMM can pause the guest
//! after its Nth flash access, for example to migrate it.
//!
//! # Migration
//!
//! [`migrate`] moves the running VM to another `pflash-vmm` process: the flash device with
//! the `pflash-migration` stream (dirty-chunk pre-copy while the guest runs, then the
//! device registers and the last dirty chunks), and the rest of the VM (vCPU registers,
//! RAM, code image) in a versioned, digested section of its own. The destination holds the
//! received flash with a [`pflash::Deferred`] storage and commits its varstore file only
//! after the source has released its own; its rustdoc describes the protocol, the commit
//! point and what is refused when.
//!
//! # The guest
//!
//! [`guest`] builds the code-flash image (`pflash-vmm guest`): real mode to 32-bit
//! protected mode, a CFI probe of the vars flash, a checksum of its content, then a table
//! of flash accesses ([`guest::workload`]: the recorded OVMF boot, or seeded random command
//! sequences whose expected reads come from the `pflash` model), and a checksum of the
//! result. It reports on COM1 and through `isa-debug-exit` (0 when everything matched), so
//! the same image runs under `qemu-system-x86_64 -machine q35,accel=kvm`.
//!
//! ```text
//! pflash-vmm guest --workload boot -o boot.bin
//! pflash-vmm vars -o vars.fd                 # the boot's recorded before-image
//! pflash-vmm run --code boot.bin --vars vars.fd --json
//! pflash-vmm vars --after -o after.fd && cmp vars.fd after.fd
//! ```
//!
//! # Side by side with QEMU-KVM
//!
//! `benches/side_by_side.rs` runs the same images under this VMM and under QEMU 10.0 and 7.2
//! with KVM; `docs/pflash-vmm-bench.md` has the figures and the command. In short, on the
//! recorded OVMF boot with the background writer: 0.62–0.65× QEMU's wall and CPU time, the
//! same exits, 0.11× the system calls, none of them `pwrite`/`fdatasync` on the vCPU thread,
//! 512× fewer bytes written to the varstore, and a device write call of 60 ns (p50) and
//! 321 ns (p99) per MMIO write exit ([`latency`], in `run --json`). On an erase-heavy random
//! workload the bytes are only 2.4× fewer: an erase writes a 4 KiB sector in both VMMs.
//!
//! # Crash safety
//!
//! `tests/kill.rs` kills `pflash-vmm run` with SIGKILL at random flash accesses (`run
//! --progress-every N`) and checks that the varstore always equals the content after some
//! prefix of the completed operations, with either writer.
#![warn(missing_docs)]

pub mod exits;
pub mod flash;
pub mod guest;
pub mod latency;
pub mod layout;
pub mod migrate;
pub mod vm;
