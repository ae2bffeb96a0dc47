//! The workloads a guest image can carry: the recorded OVMF boot and seeded random command
//! sequences, turned into a [`Program`].

use std::fmt;
use std::str::FromStr;

use pflash::{Compat, Geometry, Pflash};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{checksum, Op, Program};
use crate::flash;

/// The recorded OVMF boot (QEMU 7.2, edk2 2022.11): the flash accesses that reached the vars
/// flash, and the vars image before and after (see `crates/pflash/tests/data/README.md`).
const BOOT_TRACE_XZ: &[u8] = include_bytes!("../../../pflash/tests/data/ovmf-boot-ops.txt.xz");
const BOOT_BEFORE_XZ: &[u8] =
    include_bytes!("../../../pflash/tests/data/ovmf-boot-vars-before.fd.xz");
const BOOT_AFTER_XZ: &[u8] =
    include_bytes!("../../../pflash/tests/data/ovmf-boot-vars-after.fd.xz");

/// Largest decompressed size of the embedded data (the trace is under 1 MiB of text).
const MAX_EMBEDDED_LEN: u64 = 16 << 20;

/// Most random sequences one image may carry (the table must fit QEMU's 8 MiB of flash).
pub const MAX_RANDOM_SEQUENCES: u32 = 20_000;

/// A workload named on the command line: `boot` or `random:N:SEED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// The recorded OVMF boot's flash operations, every write with its recorded width and
    /// every read checked against the recorded value.
    Boot,
    /// `count` random command sequences generated from `seed`.
    Random {
        /// Number of command sequences.
        count: u32,
        /// Seed of the generator (ChaCha8).
        seed: u64,
    },
}

/// A workload name that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown workload {0:?}: expected boot or random:N:SEED (N at most {MAX_RANDOM_SEQUENCES})"
)]
pub struct UnknownWorkload(String);

impl FromStr for Workload {
    type Err = UnknownWorkload;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || UnknownWorkload(s.to_owned());
        if s == "boot" {
            return Ok(Workload::Boot);
        }
        let rest = s.strip_prefix("random:").ok_or_else(bad)?;
        let (count, seed) = rest.split_once(':').ok_or_else(bad)?;
        let count: u32 = count.parse().map_err(|_| bad())?;
        if count > MAX_RANDOM_SEQUENCES {
            return Err(bad());
        }
        Ok(Workload::Random {
            count,
            seed: seed.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Boot => f.write_str("boot"),
            Workload::Random { count, seed } => write!(f, "random:{count}:{seed}"),
        }
    }
}

/// Why a workload cannot be generated.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The embedded boot data does not decompress or parse (a broken build).
    #[error("embedded {what}: {message}")]
    Embedded {
        /// Which file.
        what: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The boot trace has an operation the guest cannot perform.
    #[error("boot trace line {line}: {what}")]
    Trace {
        /// 1-based line.
        line: usize,
        /// Why.
        what: &'static str,
    },
    /// The initial vars content does not make a q35 flash.
    #[error("initial vars content: {0}")]
    Geometry(#[from] pflash::GeometryError),
}

fn unxz(what: &'static str, compressed: &[u8]) -> Result<Vec<u8>, WorkloadError> {
    let mut out = Vec::new();
    let mut input = compressed;
    // The input is compiled in: its size is known and bounded; the check below is a guard
    // against a broken build only.
    lzma_rs::xz_decompress(&mut input, &mut out).map_err(|e| WorkloadError::Embedded {
        what,
        message: e.to_string(),
    })?;
    if out.len() as u64 > MAX_EMBEDDED_LEN {
        return Err(WorkloadError::Embedded {
            what,
            message: "too large".into(),
        });
    }
    Ok(out)
}

/// The vars image the recorded boot started from.
///
/// # Errors
///
/// Only if the embedded data is broken.
pub fn boot_before_image() -> Result<Vec<u8>, WorkloadError> {
    unxz("boot before-image", BOOT_BEFORE_XZ)
}

/// The vars image QEMU left after the recorded boot.
///
/// # Errors
///
/// Only if the embedded data is broken.
pub fn boot_after_image() -> Result<Vec<u8>, WorkloadError> {
    unxz("boot after-image", BOOT_AFTER_XZ)
}

/// The program for `workload`, starting from `initial` vars content for a random workload
/// (the boot workload always starts from [`boot_before_image`]).
///
/// # Errors
///
/// Broken embedded data, or an `initial` content that is no q35 flash image.
pub fn program(workload: Workload, initial: Option<&[u8]>) -> Result<Program, WorkloadError> {
    match workload {
        Workload::Boot => boot_program(),
        Workload::Random { count, seed } => {
            let before;
            let initial = match initial {
                Some(content) => content,
                None => {
                    before = boot_before_image()?;
                    &before
                }
            };
            random_program(count, seed, initial)
        }
    }
}

fn boot_program() -> Result<Program, WorkloadError> {
    let text = unxz("boot trace", BOOT_TRACE_XZ)?;
    let text = String::from_utf8(text).map_err(|e| WorkloadError::Embedded {
        what: "boot trace",
        message: e.to_string(),
    })?;
    let lines = flash::parse_trace(&text).map_err(|e| WorkloadError::Embedded {
        what: "boot trace",
        message: e.to_string(),
    })?;
    let before = boot_before_image()?;
    let after = boot_after_image()?;
    let mut ops = Vec::with_capacity(lines.len());
    for line in &lines {
        let trace_error = |what| WorkloadError::Trace {
            line: line.line,
            what,
        };
        let narrow = |offset: u64, size: u8, value: u64| {
            let offset = u32::try_from(offset).map_err(|_| trace_error("offset too large"))?;
            let value =
                u32::try_from(value).map_err(|_| trace_error("value wider than 4 bytes"))?;
            if !matches!(size, 1 | 2 | 4) {
                return Err(trace_error("access size is not 1, 2 or 4"));
            }
            Ok((offset, size, value))
        };
        match line.op {
            None => {}
            // The guest starts right after a reset: a reset is only possible first.
            Some(flash::TraceOp::Reset) if ops.is_empty() => {}
            Some(flash::TraceOp::Reset) => return Err(trace_error("reset after the start")),
            Some(flash::TraceOp::Write {
                offset,
                size,
                value,
            }) => {
                let (offset, size, value) = narrow(offset, size, value)?;
                ops.push(Op::Write {
                    offset,
                    size,
                    value,
                });
            }
            Some(flash::TraceOp::Read {
                offset,
                size,
                value,
            }) => {
                let (offset, size, value) = narrow(offset, size, value)?;
                ops.push(Op::Read {
                    offset,
                    size,
                    expect: Some(value),
                });
            }
        }
    }
    Ok(Program {
        name: "boot".into(),
        vars_len: before.len() as u64,
        ops,
        initial_checksum: checksum(&before),
        final_checksum: checksum(&after),
    })
}

/// Drives one model per QEMU release the VMM can behave like, so that every expected read
/// value holds under both (sequences are chosen where the releases agree; a read where they
/// would not is recorded unchecked).
struct Generator {
    rng: ChaCha8Rng,
    models: Vec<Pflash>,
    ops: Vec<Op>,
    len: u32,
}

impl Generator {
    fn write(&mut self, offset: u32, size: u8, value: u32) {
        let bytes = &value.to_le_bytes()[..usize::from(size)];
        for model in &mut self.models {
            model.write(u64::from(offset), bytes);
        }
        self.ops.push(Op::Write {
            offset,
            size,
            value,
        });
    }

    fn read(&mut self, offset: u32, size: u8) {
        let values: Vec<u32> = self
            .models
            .iter_mut()
            .map(|model| {
                let mut bytes = [0u8; 4];
                model.read(u64::from(offset), &mut bytes[..usize::from(size)]);
                u32::from_le_bytes(bytes)
            })
            .collect();
        let agree = values.windows(2).all(|pair| pair[0] == pair[1]);
        self.ops.push(Op::Read {
            offset,
            size,
            expect: agree.then_some(values[0]),
        });
    }

    fn size(&mut self) -> u8 {
        [1, 2, 4][self.rng.gen_range(0..3)]
    }

    /// A random offset aligned to `align`, anywhere in the flash.
    fn offset(&mut self, align: u32) -> u32 {
        self.rng.gen_range(0..self.len / align) * align
    }

    fn random_read(&mut self) {
        let size = self.size();
        let offset = self.offset(u32::from(size));
        self.read(offset, size);
    }

    /// Ends a sequence: mostly back to read-array mode, sometimes through clear status,
    /// sometimes not at all (the next command starts from the status mode).
    fn finish(&mut self, at: u32) {
        match self.rng.gen_range(0..10) {
            0..=5 => self.write(at, 1, 0xff),
            6 | 7 => self.write(at, 1, 0x50),
            _ => {}
        }
    }

    fn sequence(&mut self, write_block: u32, sector: u32) {
        match self.rng.gen_range(0..100) {
            // Single program (0x10 or 0x40), 1, 2 or 4 bytes.
            0..=39 => {
                let size = self.size();
                let offset = self.offset(u32::from(size));
                let command = if self.rng.gen() { 0x10 } else { 0x40 };
                self.write(offset, 1, command);
                let value = self.rng.gen::<u32>() & (u32::MAX >> (32 - 8 * u32::from(size)));
                self.write(offset, size, value);
                if self.rng.gen() {
                    self.random_read();
                }
                self.finish(offset);
            }
            // Buffered write of 2 to 32 bytes inside one write block, the count cycle at
            // the block's start (where QEMU 7.2 and 10.0 stage the same block).
            40..=59 => {
                let block = self.offset(write_block);
                let start = self.rng.gen_range(0..write_block - 1);
                let count = self.rng.gen_range(2..=(write_block - start).min(32));
                self.write(block, 1, 0xe8);
                self.read(block, 1);
                self.write(block, 1, count - 1);
                for i in 0..count {
                    let byte = self.rng.gen::<u8>();
                    self.write(block + start + i, 1, u32::from(byte));
                }
                self.write(block, 1, 0xd0);
                self.read(block, 1);
                self.finish(block);
            }
            // Block erase.
            60..=64 => {
                let offset = self.offset(1);
                self.write(offset, 1, 0x20);
                self.write(offset, 1, 0xd0);
                self.read(offset - offset % sector, 1);
                self.finish(offset);
            }
            // Read status, then reads in whatever mode that leaves.
            65..=74 => {
                let offset = self.offset(1);
                self.write(offset, 1, 0x70);
                for _ in 0..self.rng.gen_range(1..4) {
                    self.random_read();
                }
                self.finish(offset);
            }
            // CFI query.
            75..=79 => {
                let offset = self.offset(1);
                self.write(offset, 1, 0x98);
                for _ in 0..self.rng.gen_range(1..4) {
                    let offset = self.rng.gen_range(0..0x40);
                    self.read(offset, 1);
                }
                self.write(0, 1, 0xff);
            }
            // Clear status.
            80..=84 => {
                let offset = self.offset(1);
                self.write(offset, 1, 0x50);
            }
            // Reads in the current mode (read-array mode mostly: served from memory).
            _ => {
                for _ in 0..self.rng.gen_range(1..8) {
                    self.random_read();
                }
            }
        }
    }
}

fn random_program(count: u32, seed: u64, initial: &[u8]) -> Result<Program, WorkloadError> {
    let geometry = Geometry::q35(initial.len() as u64)?;
    let models = Compat::ALL
        .iter()
        .map(|&compat| {
            Pflash::new(
                geometry.clone().with_compat(compat),
                initial.to_vec(),
                Default::default(),
                Default::default(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut generator = Generator {
        rng: ChaCha8Rng::seed_from_u64(seed),
        models,
        ops: Vec::new(),
        len: initial.len() as u32,
    };
    // The write-block size the device announces (CFI byte 0x2A: log2 of it).
    let mut log2 = [0u8];
    generator.models[0].write(0, &[0x98]);
    generator.models[0].read(0x2a, &mut log2);
    generator.models[0].write(0, &[0xff]);
    let write_block = 1u32 << log2[0].min(16);
    for _ in 0..count {
        generator.sequence(write_block, geometry.sector_len as u32);
    }
    let finals: Vec<u32> = generator
        .models
        .iter()
        .map(|model| checksum(model.memory()))
        .collect();
    Ok(Program {
        name: format!("random:{count}:{seed}"),
        vars_len: initial.len() as u64,
        ops: generator.ops,
        initial_checksum: checksum(initial),
        final_checksum: finals[0],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names() {
        assert_eq!("boot".parse(), Ok(Workload::Boot));
        assert_eq!(
            "random:10:42".parse(),
            Ok(Workload::Random {
                count: 10,
                seed: 42
            })
        );
        for bad in [
            "",
            "random",
            "random:1",
            "random:x:1",
            "random:1:x",
            "random:99999:1",
        ] {
            assert!(bad.parse::<Workload>().is_err(), "{bad}");
        }
        assert_eq!(
            Workload::Random { count: 3, seed: 7 }.to_string(),
            "random:3:7"
        );
    }

    #[test]
    fn boot_program_is_the_trace() {
        let program = program(Workload::Boot, None).unwrap();
        assert_eq!(program.vars_len, 540_672);
        assert!(program.ops.len() > 30_000);
        assert_ne!(program.initial_checksum, program.final_checksum);
    }

    #[test]
    fn random_programs_are_reproducible_and_checked() {
        let initial = vec![0xffu8; 64 * 1024];
        let a = program(
            Workload::Random {
                count: 300,
                seed: 1,
            },
            Some(&initial),
        )
        .unwrap();
        let b = program(
            Workload::Random {
                count: 300,
                seed: 1,
            },
            Some(&initial),
        )
        .unwrap();
        let c = program(
            Workload::Random {
                count: 300,
                seed: 2,
            },
            Some(&initial),
        )
        .unwrap();
        assert_eq!(a, b);
        assert_ne!(a.ops, c.ops);
        let checked = a
            .ops
            .iter()
            .filter(|op| {
                matches!(
                    op,
                    Op::Read {
                        expect: Some(_),
                        ..
                    }
                )
            })
            .count();
        assert!(checked > 100, "{checked} checked reads");
    }
}
