//! The MMIO trace format (documented in `docs/pflash-cfi01.md`) and a replayer.
//!
//! One operation a line, offsets relative to the device, numbers in hex with `0x` (plain
//! decimal is accepted too), sizes 1, 2, 4 or 8:
//!
//! ```text
//! X                           device (system) reset
//! W <offset> <size> <value>   MMIO write
//! R <offset> <size> <value>   MMIO read and the value the reference returned
//! # ...                       comment
//! ```
//!
//! Values are the bus values (as QEMU's qtest prints them): little-endian byte order unless
//! the device is big-endian.
//!
//! ```
//! use pflash::trace::{parse_trace, replay};
//! use pflash::{Geometry, Pflash};
//!
//! let lines = parse_trace("# probe\nX\nW 0x10 1 0x50\nW 0x10 1 0x70\nR 0x10 1 0x0\n").unwrap();
//! let mut dev: Pflash = Pflash::new(Geometry::q35(4096).unwrap(), vec![0; 4096], Default::default(), Default::default()).unwrap();
//! let stats = replay(&mut dev, &lines).unwrap();
//! assert_eq!((stats.resets, stats.writes, stats.reads), (1, 2, 1));
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::device::{Pflash, PflashEvents};
use crate::storage::Storage;

/// One operation of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceOp {
    /// `X`: system reset.
    Reset,
    /// `W`: an MMIO write.
    Write {
        /// Offset from the device base.
        offset: u64,
        /// Access size in bytes: 1, 2, 4 or 8.
        size: u8,
        /// The value written.
        value: u64,
    },
    /// `R`: an MMIO read and the value the reference returned.
    Read {
        /// Offset from the device base.
        offset: u64,
        /// Access size in bytes: 1, 2, 4 or 8.
        size: u8,
        /// The value expected.
        value: u64,
    },
}

/// One line of a trace file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceLine {
    /// 1-based line number in the file (comments and blank lines counted).
    pub line: usize,
    /// The operation; `None` for comments and blank lines.
    pub op: Option<TraceOp>,
}

/// A trace that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read or decompressed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The trace file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a valid operation.
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// Counts of what [`replay`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    /// `X` lines.
    pub resets: usize,
    /// `W` lines.
    pub writes: usize,
    /// `R` lines (all matched).
    pub reads: usize,
}

/// The first read whose value differs from the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: read at {offset:#x} returned {got:#x}, the trace expects {expected:#x}")]
pub struct ReplayMismatch {
    /// 1-based line number of the `R` line.
    pub line: usize,
    /// Offset read.
    pub offset: u64,
    /// Value in the trace.
    pub expected: u64,
    /// Value the device returned.
    pub got: u64,
}

fn parse_number(line: usize, what: &str, s: &str) -> Result<u64, TraceError> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| TraceError::Syntax {
        line,
        message: format!("bad {what} {s:?}"),
    })
}

fn parse_line(line: usize, text: &str) -> Result<Option<TraceOp>, TraceError> {
    let text = text.trim();
    if text.is_empty() || text.starts_with('#') {
        return Ok(None);
    }
    let syntax = |message: String| TraceError::Syntax { line, message };
    let fields: Vec<&str> = text.split_whitespace().collect();
    match fields[0] {
        "X" if fields.len() == 1 => Ok(Some(TraceOp::Reset)),
        "X" => Err(syntax("X takes no operands".into())),
        kind @ ("W" | "R") => {
            let [_, offset, size, value] = fields[..] else {
                return Err(syntax(format!("{kind} needs <offset> <size> <value>")));
            };
            let offset = parse_number(line, "offset", offset)?;
            let size = parse_number(line, "size", size)?;
            let size = match size {
                1 | 2 | 4 | 8 => size as u8,
                _ => return Err(syntax(format!("size {size} is not 1, 2, 4 or 8"))),
            };
            let value = parse_number(line, "value", value)?;
            if size < 8 && value >> (8 * u32::from(size)) != 0 {
                return Err(syntax(format!(
                    "value {value:#x} does not fit {size} bytes"
                )));
            }
            Ok(Some(if kind == "W" {
                TraceOp::Write {
                    offset,
                    size,
                    value,
                }
            } else {
                TraceOp::Read {
                    offset,
                    size,
                    value,
                }
            }))
        }
        other => Err(syntax(format!("unknown operation {other:?}"))),
    }
}

/// Parses a whole trace.
///
/// # Errors
///
/// The first line that is not a comment, a blank line or a valid operation.
pub fn parse_trace(text: &str) -> Result<Vec<TraceLine>, TraceError> {
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            Ok(TraceLine {
                line: i + 1,
                op: parse_line(i + 1, l)?,
            })
        })
        .collect()
}

/// Reads and parses a trace file, decompressing it if its name ends in `.xz`.
///
/// # Errors
///
/// [`TraceError::Io`] if the file cannot be read, decompressed or is not UTF-8, else as
/// [`parse_trace`].
pub fn read_trace_file(path: &Path) -> Result<Vec<TraceLine>, TraceError> {
    let io = |source| TraceError::Io {
        path: path.to_owned(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if path.extension().is_some_and(|e| e == "xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut raw.as_slice(), &mut out).map_err(|e| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            ))
        })?;
        out
    } else {
        raw
    };
    let mut text = String::new();
    bytes.as_slice().read_to_string(&mut text).map_err(io)?;
    parse_trace(&text)
}

/// Byte image of a bus value of `size` bytes in the device's byte order.
fn value_bytes(value: u64, size: u8, big_endian: bool) -> ([u8; 8], usize) {
    let n = usize::from(size);
    let mut out = [0u8; 8];
    if big_endian {
        out[..n].copy_from_slice(&value.to_be_bytes()[8 - n..]);
    } else {
        out[..n].copy_from_slice(&value.to_le_bytes()[..n]);
    }
    (out, n)
}

fn bytes_value(bytes: &[u8], big_endian: bool) -> u64 {
    if big_endian {
        bytes.iter().fold(0, |v, &b| v << 8 | u64::from(b))
    } else {
        bytes.iter().rev().fold(0, |v, &b| v << 8 | u64::from(b))
    }
}

/// Replays `lines` on `dev`: `X` resets, `W` writes, `R` reads and compares.
///
/// # Errors
///
/// The first `R` whose value differs; the operations before it have been applied.
pub fn replay<S: Storage, E: PflashEvents>(
    dev: &mut Pflash<S, E>,
    lines: &[TraceLine],
) -> Result<ReplayStats, ReplayMismatch> {
    let be = dev.geometry().big_endian;
    let mut stats = ReplayStats::default();
    for l in lines {
        match l.op {
            None => {}
            Some(TraceOp::Reset) => {
                dev.reset();
                stats.resets += 1;
            }
            Some(TraceOp::Write {
                offset,
                size,
                value,
            }) => {
                let (buf, n) = value_bytes(value, size, be);
                dev.write(offset, &buf[..n]);
                stats.writes += 1;
            }
            Some(TraceOp::Read {
                offset,
                size,
                value,
            }) => {
                let mut buf = [0u8; 8];
                let n = usize::from(size);
                dev.read(offset, &mut buf[..n]);
                let got = bytes_value(&buf[..n], be);
                if got != value {
                    return Err(ReplayMismatch {
                        line: l.line,
                        offset,
                        expected: value,
                        got,
                    });
                }
                stats.reads += 1;
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_kinds() {
        let t = parse_trace(
            "# c\n\nX\nW 0x0010 1 0x0050\nR 0x10 4 0x00800080\nW 16 8 0x1122334455667788\n",
        )
        .unwrap();
        assert_eq!(t.len(), 6);
        assert_eq!(t[0], TraceLine { line: 1, op: None });
        assert_eq!(t[1].op, None);
        assert_eq!(t[2].op, Some(TraceOp::Reset));
        assert_eq!(
            t[3],
            TraceLine {
                line: 4,
                op: Some(TraceOp::Write {
                    offset: 0x10,
                    size: 1,
                    value: 0x50
                })
            }
        );
        assert_eq!(
            t[4].op,
            Some(TraceOp::Read {
                offset: 0x10,
                size: 4,
                value: 0x0080_0080
            })
        );
        assert_eq!(
            t[5].op,
            Some(TraceOp::Write {
                offset: 16,
                size: 8,
                value: 0x1122_3344_5566_7788
            })
        );
    }

    #[test]
    fn errors_name_the_line() {
        for (text, needle) in [
            ("X\nQ 1 2 3", "line 2: unknown operation"),
            ("W 0x10 3 0x1", "line 1: size 3"),
            ("\n\nR 0x10 1", "line 3: R needs"),
            ("W 0xzz 1 0x1", "line 1: bad offset"),
            ("W 0x1 1 0x100", "line 1: value 0x100 does not fit"),
            ("X 1", "line 1: X takes no operands"),
        ] {
            let e = parse_trace(text).unwrap_err().to_string();
            assert!(e.starts_with(needle), "{e:?} vs {needle:?}");
        }
    }

    #[test]
    fn replay_reports_mismatch() {
        use crate::{Geometry, Pflash};
        let lines = parse_trace("W 0 1 0x70\nR 0 4 0x00800080\nR 0 1 0x81\n").unwrap();
        let mut dev: Pflash = Pflash::new(
            Geometry::q35(4096).unwrap(),
            vec![0xff; 4096],
            Default::default(),
            Default::default(),
        )
        .unwrap();
        let e = replay(&mut dev, &lines).unwrap_err();
        assert_eq!(
            e,
            ReplayMismatch {
                line: 3,
                offset: 0,
                expected: 0x81,
                got: 0x80
            }
        );
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let e = read_trace_file(Path::new("/nonexistent/trace.txt")).unwrap_err();
        assert!(matches!(e, TraceError::Io { .. }));
    }
}
