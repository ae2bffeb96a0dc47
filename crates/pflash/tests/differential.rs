//! Differential test against QEMU's own `cfi.pflash01`, driven through qtest
//! by `testkit::QtestFlash`, in both QEMU releases we model: random command
//! sequences go to QEMU and to our `Pflash` in the matching compatibility
//! (`Stack::Debian12`'s QEMU 7.2 against `Compat::Qemu7_2`, `Stack::Current`'s
//! QEMU 10.0 against `Compat::Qemu10_0`); every read must give the same value
//! and, once QEMU has quit, its backing file must equal our memory byte for
//! byte, and so must the registers QEMU migrates (wcycle, command, status,
//! buffered-write counter), read from its own migration stream at the end.
//! Both QEMUs get the same sequences (same seeds, same templates).
//!
//! Sequences are built from realistic command shapes (program + data, erase +
//! confirm, buffered write with count, data and confirm, lock + confirm,
//! status/ID/CFI reads, read-array and unknown commands, system resets) with
//! random access widths (1, 2, 4, 8), offsets biased towards a few blocks so
//! programs and erases collide, and some plain random writes. Seeds are fixed,
//! so a failure reproduces; it prints the op index, the last ops and both
//! values, and writes the whole sequence as a replayable trace (with QEMU's
//! read values) to `target/tmp/`.
//!
//! Default, per QEMU release: 300,000 operations over q35, q35 with a
//! read-only drive and arm `virt`, plus, for QEMU 10.0 only (our QEMU 7.2
//! build has neither), 100,000 over riscv and loongarch `virt`. The test of
//! each release prints its total and asserts at least 120,000.
//! `NVRAM_SOAK_OPS=N` runs N per configuration instead, `NVRAM_SOAK_SEED=S`
//! changes the seeds, `NVRAM_DIFF_ONLY=NAME` runs only that configuration.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use pflash::{Compat, Geometry, NoEvents, NoStorage, Pflash};
use testkit::{debian_firmware, QtestFlash, QtestOp, Stack};

/// Operations per configuration in the default run.
const Q35_OPS: usize = 150_000;
const Q35_READ_ONLY_OPS: usize = 50_000;
const ARM_OPS: usize = 100_000;
const RISCV_OPS: usize = 50_000;
const LOONGARCH_OPS: usize = 50_000;
/// What each QEMU release must have been given in a default run.
const MIN_OPS_PER_RELEASE: usize = 120_000;
/// Ops sent to QEMU in one pipelined batch.
const BATCH: usize = 512;

/// SplitMix64: tiny, fast and good enough to pick test operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read { offset: u64, size: u8 },
    Write { offset: u64, size: u8, value: u64 },
    Reset,
}

impl fmt::Display for Op {
    /// The trace format of `pflash-trace` (a read without its value).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Read { offset, size } => write!(f, "R {offset:#x} {size}"),
            Op::Write {
                offset,
                size,
                value,
            } => write!(f, "W {offset:#x} {size} {value:#x}"),
            Op::Reset => write!(f, "X"),
        }
    }
}

/// One QEMU machine's vars flash and how to exercise it.
struct Config {
    name: &'static str,
    geometry: Geometry,
    start: fn(Stack, &Path) -> Result<QtestFlash, String>,
    /// The varstore template the flash starts from.
    template: fn() -> PathBuf,
    /// Operations and seed of the default run.
    ops: usize,
    seed: u64,
    /// The QEMU releases that have this machine.
    stacks: &'static [Stack],
    /// Bytes per bank access; commands are replicated per chip when the bank
    /// is made of several (`device_width` < `bank_width`).
    bank_width: u8,
    chip_width: u8,
    /// Sectors most operations go to.
    hot_sectors: &'static [u64],
    /// Within a hot sector most offsets fall in its first `hot_window` bytes.
    hot_window: u64,
    /// Percentage of erase sequences among the command shapes (each erase
    /// wipes a whole sector, so too many leave little programmed data).
    erase_percent: u64,
}

impl Config {
    /// x86 q35 vars flash: Debian 12's 4M OVMF varstore template, legacy
    /// device width, 4 KiB sectors.
    fn q35() -> Self {
        let len = fs::metadata(q35_template()).unwrap().len();
        Config {
            name: "q35",
            geometry: Geometry::q35(len).unwrap(),
            start: QtestFlash::start_q35,
            template: q35_template,
            ops: Q35_OPS,
            seed: 0x0a35_5eed,
            stacks: &Stack::ALL,
            bank_width: 1,
            chip_width: 1,
            // Header block, the next one, the FTW working block (0x40000), the last.
            hot_sectors: &[0, 1, 0x40, 0x83],
            hot_window: 0x1000,
            erase_percent: 2,
        }
    }

    /// The q35 vars flash attached `readonly=on`: every program and erase
    /// fails with status bits, nothing changes.
    fn q35_read_only() -> Self {
        let mut config = Config::q35();
        config.name = "q35-read-only";
        config.geometry.read_only = true;
        config.start = QtestFlash::start_q35_read_only;
        config.ops = Q35_READ_ONLY_OPS;
        config.seed = 0x0a35_0000_5eed;
        config
    }

    /// arm `virt` vars bank: 64 MiB of two 16-bit chips, 256 KiB sectors,
    /// starting from Debian 12's AAVMF template with Microsoft keys.
    fn arm_virt() -> Self {
        Config {
            name: "arm-virt",
            geometry: Geometry::arm_virt(),
            start: QtestFlash::start_arm_virt,
            template: || debian_firmware("AAVMF_VARS.ms.fd"),
            ops: ARM_OPS,
            seed: 0xa4a5_5eed,
            stacks: &Stack::ALL,
            bank_width: 4,
            chip_width: 2,
            hot_sectors: &[0, 1, 3, 255],
            hot_window: 0x2000,
            erase_percent: 2,
        }
    }

    /// riscv `virt` vars bank: 32 MiB of two 16-bit chips, 256 KiB sectors,
    /// from edk2 2025.02's template (QEMU 10.0 only).
    fn riscv_virt() -> Self {
        Config {
            name: "riscv-virt",
            geometry: Geometry::riscv_virt(),
            start: QtestFlash::start_riscv_virt,
            template: || Stack::Current.firmware("RISCV_VIRT_VARS.fd"),
            ops: RISCV_OPS,
            seed: 0x05c5_5eed,
            stacks: &[Stack::Current],
            bank_width: 4,
            chip_width: 2,
            hot_sectors: &[0, 1, 2, 127],
            hot_window: 0x2000,
            erase_percent: 2,
        }
    }

    /// loongarch `virt` vars flash: 16 MiB of two 16-bit chips, 256 KiB
    /// sectors, from edk2 2025.02's template (QEMU 10.0 only).
    fn loongarch_virt() -> Self {
        Config {
            name: "loongarch-virt",
            geometry: Geometry::loongarch_virt(),
            start: QtestFlash::start_loongarch_virt,
            template: || Stack::Current.firmware("QEMU_VARS.fd"),
            ops: LOONGARCH_OPS,
            seed: 0x1a64_5eed,
            stacks: &[Stack::Current],
            bank_width: 4,
            chip_width: 2,
            hot_sectors: &[0, 1, 2, 63],
            hot_window: 0x2000,
            erase_percent: 2,
        }
    }

    fn all() -> Vec<Config> {
        vec![
            Config::q35(),
            Config::q35_read_only(),
            Config::arm_virt(),
            Config::riscv_virt(),
            Config::loongarch_virt(),
        ]
    }

    fn len(&self) -> u64 {
        self.geometry.size()
    }
}

/// Commands the device knows, and some it does not (0x28 is QEMU's erase
/// alias in some versions; 0x01, 0x30, 0x42, 0xB0, 0xC0 are not commands).
const COMMANDS: &[u64] = &[
    0x00, 0x10, 0x20, 0x28, 0x40, 0x50, 0x60, 0x70, 0x90, 0x98, 0xD0, 0xE8, 0xF0, 0xFF, 0x01, 0x30,
    0x42, 0xB0, 0xC0,
];

/// Builds the random operation sequence, one command shape at a time.
struct Generator<'a> {
    config: &'a Config,
    rng: Rng,
    /// Offset of the last command, so follow-up cycles can reuse it.
    last: u64,
}

impl Generator<'_> {
    /// A random access size, weighted towards the bank width.
    fn size(&mut self) -> u8 {
        let bank = self.config.bank_width;
        if self.rng.chance(50) {
            bank
        } else {
            self.rng.pick(&[1, 2, 4, 8])
        }
    }

    /// An offset for a `size`-byte access: mostly in a hot sector's window,
    /// mostly aligned to the size.
    fn offset(&mut self, size: u8) -> u64 {
        let len = self.config.len();
        let raw = if self.rng.chance(75) {
            let sector = self.rng.pick(self.config.hot_sectors) * self.config.geometry.sector_len;
            let window = if self.rng.chance(80) {
                self.config.hot_window
            } else {
                self.config.geometry.sector_len
            };
            sector + self.rng.below(window)
        } else {
            self.rng.below(len)
        };
        // Mostly aligned; unaligned ones reach the device in pieces (see
        // `qemu_pieces`).
        let raw = if self.rng.chance(90) {
            raw & !(u64::from(size) - 1)
        } else {
            raw
        };
        raw.min(len - u64::from(size))
    }

    /// A command cycle: mostly a bank-width write with the command in every
    /// chip, sometimes other widths or a single chip.
    fn command(&mut self, out: &mut Vec<Op>, offset: u64, cmd: u64) {
        let size = if self.rng.chance(80) {
            self.config.bank_width
        } else {
            self.rng.pick(&[1, 2, 4, 8])
        };
        let mut value = cmd;
        if self.rng.chance(85) {
            let mut shift = u32::from(self.config.chip_width) * 8;
            while shift < u32::from(size) * 8 {
                value |= cmd << shift;
                shift += u32::from(self.config.chip_width) * 8;
            }
        }
        let offset = offset.min(self.config.len() - u64::from(size));
        self.last = offset;
        out.push(Op::Write {
            offset,
            size,
            value,
        });
    }

    fn read_near(&mut self, out: &mut Vec<Op>, base: u64) {
        let size = self.size();
        let offset = if self.rng.chance(60) {
            base
        } else if self.rng.chance(50) {
            // Low addresses: ID and CFI query indexes (scaled by the bank).
            self.rng.below(0x60) * u64::from(self.config.bank_width)
        } else {
            self.offset(size)
        };
        let offset = offset.min(self.config.len() - u64::from(size));
        out.push(Op::Read { offset, size });
    }

    fn reads(&mut self, out: &mut Vec<Op>, base: u64, max: u64) {
        for _ in 0..self.rng.below(max + 1) {
            self.read_near(out, base);
        }
    }

    fn maybe_read_array(&mut self, out: &mut Vec<Op>, offset: u64) {
        if self.rng.chance(60) {
            self.command(out, offset, 0xFF);
        }
    }

    fn data_write(&mut self, out: &mut Vec<Op>, offset: u64) {
        let size = self.size();
        let offset = offset.min(self.config.len() - u64::from(size));
        let value = self.rng.next();
        out.push(Op::Write {
            offset,
            size,
            value,
        });
    }

    /// Appends one command shape.
    fn shape(&mut self, out: &mut Vec<Op>) {
        let size = self.size();
        let at = self.offset(size);
        let roll = if self.rng.chance(self.config.erase_percent) {
            100
        } else {
            self.rng.below(100)
        };
        match roll {
            // Program: 0x10/0x40, data (usually at the same address), status.
            0..=29 => {
                let cmd = self.rng.pick(&[0x10, 0x40]);
                self.command(out, at, cmd);
                let data_at = if self.rng.chance(85) {
                    at
                } else {
                    self.offset(size)
                };
                self.data_write(out, data_at);
                self.reads(out, at, 2);
                self.maybe_read_array(out, at);
            }
            // Buffered write: 0xE8, count−1, data cycles, confirm.
            30..=41 => {
                self.command(out, at, 0xE8);
                self.reads(out, at, 1);
                let words = if self.rng.chance(85) {
                    1 + self.rng.below(8)
                } else {
                    1 + self.rng.below(80)
                };
                let count = words - 1;
                // The count is usually replicated per chip, like commands.
                let count_value = if self.rng.chance(80) {
                    let chip_bits = u32::from(self.config.chip_width) * 8;
                    let mut v = count;
                    let mut shift = chip_bits;
                    while shift < u32::from(self.config.bank_width) * 8 {
                        v |= count << shift;
                        shift += chip_bits;
                    }
                    v
                } else {
                    count
                };
                out.push(Op::Write {
                    offset: at,
                    size: self.config.bank_width,
                    value: count_value,
                });
                let step = self.size();
                let mut data_at = at;
                for _ in 0..words {
                    if self.rng.chance(95) {
                        self.data_write_sized(out, data_at, step);
                        data_at += u64::from(step);
                    } else {
                        let anywhere = self.offset(step);
                        self.data_write_sized(out, anywhere, step);
                    }
                    if self.rng.chance(5) {
                        self.read_near(out, at);
                    }
                }
                let confirm = match self.rng.below(10) {
                    0 => 0xFF,
                    1 => self.rng.pick(COMMANDS),
                    _ => 0xD0,
                };
                self.command(out, at, confirm);
                self.reads(out, at, 2);
                self.maybe_read_array(out, at);
            }
            // Lock / unlock: 0x60 then 0xD0, 0x01, 0xFF or anything.
            42..=46 => {
                self.command(out, at, 0x60);
                self.reads(out, at, 1);
                let confirm = match self.rng.below(4) {
                    0 => 0xD0,
                    1 => 0x01,
                    2 => 0xFF,
                    _ => self.rng.pick(COMMANDS),
                };
                self.command(out, at, confirm);
                self.reads(out, at, 1);
            }
            // Status, ID and CFI query modes, and clear status.
            47..=66 => {
                let cmd = self.rng.pick(&[0x70, 0x70, 0x90, 0x98, 0x50]);
                self.command(out, at, cmd);
                self.reads(out, at, 6);
                if self.rng.chance(30) {
                    // A second command while in that mode.
                    let next = self.rng.pick(COMMANDS);
                    self.command(out, at, next);
                    self.reads(out, at, 2);
                }
                self.maybe_read_array(out, at);
            }
            // Read array (0x00, 0xF0, 0xFF) or an unknown command, then reads.
            67..=76 => {
                let cmd = self
                    .rng
                    .pick(&[0x00, 0xF0, 0xFF, 0x01, 0x30, 0x42, 0xB0, 0xC0, 0xD0]);
                self.command(out, at, cmd);
                self.reads(out, at, 2);
            }
            // Plain writes of anything, in whatever state the device is.
            77..=86 => {
                let n = 1 + self.rng.below(3);
                for _ in 0..n {
                    if self.rng.chance(50) {
                        let cmd = self.rng.pick(COMMANDS);
                        self.command(out, at, cmd);
                    } else {
                        let anywhere = self.offset(size);
                        self.data_write(out, anywhere);
                    }
                }
                self.reads(out, at, 2);
            }
            // Reads anywhere.
            87..=97 => {
                let n = 1 + self.rng.below(4);
                for _ in 0..n {
                    let size = self.size();
                    let offset = self.offset(size);
                    out.push(Op::Read { offset, size });
                }
            }
            // Follow-up of whatever came before at the last command address.
            98..=99 => {
                let last = self.last;
                self.read_near(out, last);
            }
            // Erase: 0x20 (sometimes 0x28) then 0xD0, 0xFF or anything.
            _ => {
                let cmd = if self.rng.chance(85) { 0x20 } else { 0x28 };
                self.command(out, at, cmd);
                self.reads(out, at, 1);
                let confirm = match self.rng.below(10) {
                    0 => 0xFF,
                    1 => self.rng.pick(COMMANDS),
                    _ => 0xD0,
                };
                self.command(out, at, confirm);
                self.reads(out, at, 2);
                self.maybe_read_array(out, at);
            }
        }
        // A system reset now and then (each is a QMP round trip).
        if self.rng.chance(1) && self.rng.chance(20) {
            out.push(Op::Reset);
        }
    }

    fn data_write_sized(&mut self, out: &mut Vec<Op>, offset: u64, size: u8) {
        let offset = offset.min(self.config.len() - u64::from(size));
        let value = self.rng.next();
        out.push(Op::Write {
            offset,
            size,
            value,
        });
    }
}

/// The accesses QEMU's memory core makes of one qtest access of `size` bytes
/// at `offset` (`memory_access_size` in `softmmu/physmem.c`): pieces of at
/// most 4 bytes (the flash declares no larger size), each naturally aligned,
/// as (offset within the access, size).
///
/// An aligned 1/2/4-byte access is one piece. An aligned 8-byte access is
/// given to our device whole: it splits it into 4 + 4 itself, as QEMU's core
/// does. An unaligned access, however, QEMU cuts into aligned pieces before
/// the device sees them (a `writel` at 0x…3a is a `writew` at 0x…3a and one at
/// 0x…3c, the second taken as a new command); a VMM bus may instead refuse it
/// (TCG guests' unaligned MMIO is rejected by the core), so splitting is the
/// bus's business, not our device's, and the test does it here.
fn qemu_pieces(offset: u64, size: u8) -> Vec<(u64, u8)> {
    if offset % u64::from(size) == 0 {
        return vec![(0, size)];
    }
    let mut pieces = Vec::new();
    let mut done = 0u64;
    while done < u64::from(size) {
        let at = offset + done;
        let left = u64::from(size) - done;
        let align = at & at.wrapping_neg();
        let mut piece = 4u64.min(align.max(1)).min(left);
        // Round down to a power of two.
        while piece & (piece - 1) != 0 {
            piece &= piece - 1;
        }
        pieces.push((done, piece as u8));
        done += piece;
    }
    pieces
}

fn bus_read(dev: &mut Pflash, offset: u64, size: u8) -> u64 {
    let mut buf = [0u8; 8];
    for (at, piece) in qemu_pieces(offset, size) {
        let at = at as usize;
        dev.read(offset + at as u64, &mut buf[at..at + usize::from(piece)]);
    }
    u64::from_le_bytes(buf)
}

fn bus_write(dev: &mut Pflash, offset: u64, size: u8, value: u64) {
    let bytes = value.to_le_bytes();
    for (at, piece) in qemu_pieces(offset, size) {
        let at = at as usize;
        dev.write(offset + at as u64, &bytes[at..at + usize::from(piece)]);
    }
}

/// Copies `template` to a new `len`-byte sparse file at `path` (only the
/// 4 KiB chunks that are not all zero are written) and returns the content.
fn sparse_copy(template: &Path, path: &Path, len: u64) -> Vec<u8> {
    let mut content = fs::read(template).unwrap();
    content.resize(len as usize, 0);
    let mut file = File::create(path).unwrap();
    file.set_len(len).unwrap();
    for (i, chunk) in content.chunks(4096).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            use std::os::unix::fs::FileExt;
            file.write_all_at(chunk, (i * 4096) as u64).unwrap();
        }
    }
    file.flush().unwrap();
    content
}

/// What a run did, for the summary line.
struct RunStats {
    ops: usize,
    reads: usize,
    /// Reads answered by the command state machine (status, ID, CFI), not
    /// from the array.
    device_reads: usize,
    writes: usize,
    resets: usize,
    /// Bytes of the final image that differ from the starting one.
    changed_bytes: usize,
}

/// The compatibility our device takes to match `stack`'s QEMU.
fn compat_of(stack: Stack) -> Compat {
    match stack {
        Stack::Debian12 => Compat::Qemu7_2,
        Stack::Current => Compat::Qemu10_0,
    }
}

fn q35_template() -> PathBuf {
    debian_firmware("OVMF_VARS_4M.fd")
}

/// Runs `ops_total` operations of `config` with `seed` against `stack`'s
/// QEMU, panicking on the first difference.
fn run_config(config: &Config, stack: Stack, seed: u64, ops_total: usize) -> RunStats {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.fd");
    let content = sparse_copy(&(config.template)(), &vars, config.len());
    let mut qemu = (config.start)(stack, &vars)
        .unwrap_or_else(|e| panic!("{} on QEMU {}: {e}", config.name, stack.qemu_version()));
    let geometry = config.geometry.clone().with_compat(compat_of(stack));
    let mut dev = Pflash::new(geometry, content, NoStorage, NoEvents).unwrap();
    let run = Run {
        config,
        stack,
        seed,
    };

    let mut generator = Generator {
        config,
        rng: Rng(seed),
        last: 0,
    };
    // Every op so far with, for reads, QEMU's value: the failure trace.
    let mut log: Vec<(Op, Option<u64>)> = Vec::with_capacity(ops_total + 64);
    let mut stats = RunStats {
        ops: 0,
        reads: 0,
        device_reads: 0,
        writes: 0,
        resets: 0,
        changed_bytes: 0,
    };
    let initial = dev.memory().to_vec();
    let mut pending: Vec<Op> = Vec::new();
    while stats.ops < ops_total {
        pending.clear();
        while pending.len() < BATCH && !pending.contains(&Op::Reset) {
            generator.shape(&mut pending);
        }
        // Run up to and including the first reset; the rest is regenerated
        // the same way next time round, which is fine for random tests.
        if let Some(at) = pending.iter().position(|op| *op == Op::Reset) {
            pending.truncate(at + 1);
        }
        let remaining = ops_total - stats.ops;
        pending.truncate(remaining);

        // Our device first, remembering its read values.
        let mut ours = Vec::new();
        for op in &pending {
            match *op {
                Op::Read { offset, size } => {
                    stats.device_reads += usize::from(!dev.is_array_mode());
                    ours.push(bus_read(&mut dev, offset, size));
                }
                Op::Write {
                    offset,
                    size,
                    value,
                } => bus_write(&mut dev, offset, size, value),
                Op::Reset => dev.reset(),
            }
        }
        // Then QEMU, pipelined (a reset can only be the last op).
        let qtest_ops: Vec<QtestOp> = pending
            .iter()
            .filter_map(|op| match *op {
                Op::Read { offset, size } => Some(QtestOp::Read { offset, size }),
                Op::Write {
                    offset,
                    size,
                    value,
                } => Some(QtestOp::Write {
                    offset,
                    size,
                    value,
                }),
                Op::Reset => None,
            })
            .collect();
        let theirs = qemu.run(&qtest_ops);
        if pending.last() == Some(&Op::Reset) {
            qemu.reset();
        }

        let mut read_index = 0;
        for op in &pending {
            let qemu_value = match op {
                Op::Read { .. } => {
                    let i = read_index;
                    read_index += 1;
                    Some((theirs[i], ours[i]))
                }
                _ => None,
            };
            log.push((*op, qemu_value.map(|(q, _)| q)));
            match op {
                Op::Read { .. } => stats.reads += 1,
                Op::Write { .. } => stats.writes += 1,
                Op::Reset => stats.resets += 1,
            }
            stats.ops += 1;
            if let Some((q, o)) = qemu_value {
                if q != o {
                    report_mismatch(
                        &run,
                        &log,
                        &format!("read value differs: QEMU {q:#x}, ours {o:#x}"),
                    );
                }
            }
        }
    }

    // The registers the guest cannot all read (the buffered-write counter), from QEMU's
    // own migration stream.
    let regs = qemu
        .vars_vmstate()
        .unwrap_or_else(|e| panic!("{}: {e}", config.name));
    let st = dev.state();
    let (theirs, ours) = (
        (regs.wcycle, regs.cmd, regs.status, regs.counter),
        (st.wcycle, st.cmd, st.status, st.counter),
    );
    if theirs != ours {
        report_mismatch(
            &run,
            &log,
            &format!(
                "final registers (wcycle, cmd, status, counter) differ: QEMU {theirs:x?}, ours \
                 {ours:x?}"
            ),
        );
    }
    let file = qemu.stop();
    let qemu_image = fs::read(&file).unwrap();
    let ours = dev.memory();
    assert_eq!(qemu_image.len(), ours.len());
    if qemu_image != ours {
        let differing: Vec<usize> = (0..ours.len())
            .filter(|&i| ours[i] != qemu_image[i])
            .collect();
        let first = differing[0];
        report_mismatch(
            &run,
            &log,
            &format!(
                "final images differ in {} bytes; first at {first:#x}: QEMU {:#04x}, ours {:#04x} \
                 (sector {:#x}); last ops touching that sector:\n{}",
                differing.len(),
                qemu_image[first],
                ours[first],
                first as u64 / config.geometry.sector_len,
                ops_touching(config, &log, first as u64)
            ),
        );
    }
    stats.changed_bytes = ours.iter().zip(&initial).filter(|(a, b)| a != b).count();
    println!(
        "{} on QEMU {} ({}): {} ops ({} reads of which {} in a command mode, {} writes, {} \
         resets) identical to QEMU; {} bytes changed; seed {seed:#x}; {:.2?}",
        config.name,
        stack.qemu_version(),
        compat_of(stack),
        stats.ops,
        stats.reads,
        stats.device_reads,
        stats.writes,
        stats.resets,
        stats.changed_bytes,
        started.elapsed()
    );
    stats
}

/// The last writes into the sector holding `offset`, as text.
fn ops_touching(config: &Config, log: &[(Op, Option<u64>)], offset: u64) -> String {
    let sector = offset / config.geometry.sector_len;
    let mut found: VecDeque<String> = VecDeque::new();
    for (index, (op, _)) in log.iter().enumerate() {
        if let Op::Write { offset: at, .. } = op {
            if at / config.geometry.sector_len == sector {
                if found.len() == 20 {
                    found.pop_front();
                }
                found.push_back(format!("  #{index}: {op}"));
            }
        }
    }
    Vec::from(found).join("\n")
}

/// Which run a mismatch report is about.
struct Run<'a> {
    config: &'a Config,
    stack: Stack,
    seed: u64,
}

/// Panics with the op index, the last 20 ops and `what`, after writing the
/// whole sequence as a replayable trace.
fn report_mismatch(run: &Run, log: &[(Op, Option<u64>)], what: &str) -> ! {
    let Run {
        config,
        stack,
        seed,
    } = *run;
    let trace_path = failure_trace_path(config, stack);
    let mut text = format!(
        "# differential {} on QEMU {} ({}) seed {seed:#x}: ops up to the mismatch, R values \
         from QEMU\n",
        config.name,
        stack.qemu_version(),
        compat_of(stack)
    );
    for (op, value) in log {
        match (op, value) {
            (Op::Read { offset, size }, Some(v)) => {
                text.push_str(&format!("R {offset:#x} {size} {v:#x}\n"));
            }
            _ => text.push_str(&format!("{op}\n")),
        }
    }
    let saved = match fs::write(&trace_path, text) {
        Ok(()) => format!("whole sequence written to {}", trace_path.display()),
        Err(e) => format!("could not write {}: {e}", trace_path.display()),
    };
    let tail: Vec<String> = log
        .iter()
        .enumerate()
        .skip(log.len().saturating_sub(20))
        .map(|(index, (op, value))| match value {
            Some(v) => format!("  #{index}: {op} -> QEMU {v:#x}"),
            None => format!("  #{index}: {op}"),
        })
        .collect();
    panic!(
        "{} (seed {seed:#x}) with {} differs from QEMU {} at op #{}: {what}\nlast ops:\n{}\n\
         {saved}",
        config.name,
        compat_of(stack),
        stack.qemu_version(),
        log.len() - 1,
        tail.join("\n")
    );
}

fn failure_trace_path(config: &Config, stack: Stack) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "differential-{}-qemu-{}-failure.txt",
        config.name,
        stack.qemu_version()
    ))
}

fn ops_and_seed(default_ops: usize, default_seed: u64) -> (usize, u64) {
    let ops = std::env::var("NVRAM_SOAK_OPS")
        .ok()
        .map(|v| v.parse().expect("NVRAM_SOAK_OPS is a number of operations"))
        .unwrap_or(default_ops);
    let seed = std::env::var("NVRAM_SOAK_SEED")
        .ok()
        .map(|v| {
            let v = v.trim_start_matches("0x");
            u64::from_str_radix(v, 16).expect("NVRAM_SOAK_SEED is a hex number")
        })
        .map_or(default_seed, |s| s ^ default_seed);
    (ops, seed)
}

/// The run did exercise the device (guards against a generator that
/// degenerates into, say, reads of an untouched array).
fn assert_covers(stats: &RunStats) {
    if stats.ops < 10_000 {
        return;
    }
    assert!(stats.resets > 0, "no resets");
    assert!(stats.reads > stats.ops / 5, "too few reads");
    assert!(
        stats.device_reads > stats.reads / 5,
        "too few reads in status/ID/CFI modes"
    );
}

/// Runs every configuration `stack`'s QEMU has, prints the totals and
/// checks that the default run reached [`MIN_OPS_PER_RELEASE`].
fn run_stack(stack: Stack) {
    let started = Instant::now();
    let only = std::env::var("NVRAM_DIFF_ONLY").ok();
    let mut total = 0;
    let mut names = Vec::new();
    for config in Config::all() {
        if !config.stacks.contains(&stack) || only.as_deref().is_some_and(|o| o != config.name) {
            continue;
        }
        let (ops, seed) = ops_and_seed(config.ops, config.seed);
        let stats = run_config(&config, stack, seed, ops);
        assert_eq!(stats.ops, ops);
        assert_covers(&stats);
        if config.geometry.read_only {
            assert_eq!(stats.changed_bytes, 0);
        } else if stats.ops >= 10_000 {
            assert!(stats.changed_bytes > 200, "too few bytes changed");
        }
        total += stats.ops;
        names.push(format!("{} {}", config.name, stats.ops));
    }
    println!(
        "QEMU {} ({}): {total} ops identical to our device ({}) in {:.2?}",
        stack.qemu_version(),
        compat_of(stack),
        names.join(", "),
        started.elapsed()
    );
    if only.is_none() && std::env::var_os("NVRAM_SOAK_OPS").is_none() {
        assert!(
            total >= MIN_OPS_PER_RELEASE,
            "QEMU {} got {total} ops, fewer than {MIN_OPS_PER_RELEASE}",
            stack.qemu_version()
        );
    }
}

/// Debian 12's QEMU 7.2 against `Compat::Qemu7_2`: q35, q35 read-only, arm
/// `virt`.
#[test]
fn vars_flashes_behave_like_qemu_7_2() {
    run_stack(Stack::Debian12);
}

/// QEMU 10.0 against `Compat::Qemu10_0`: q35, q35 read-only, arm, riscv and
/// loongarch `virt`.
#[test]
fn vars_flashes_behave_like_qemu_10_0() {
    run_stack(Stack::Current);
}
