//! The MMIO trace format of the [`pflash`] device (documented in `docs/pflash-cfi01.md`) and
//! a replayer: how the repository records real firmware runs against QEMU's device and plays
//! them back against this one.
//!
//! A crate of its own so that a VMM linking `pflash` does not link a trace parser and an
//! `.xz` decoder (lzma-rs) it never uses; tests, benchmarks, `nvram flash replay` and guest
//! generators do.
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
//! use pflash::{Geometry, Pflash};
//! use pflash_trace::{parse_trace, replay};
//!
//! let lines = parse_trace("# probe\nX\nW 0x10 1 0x50\nW 0x10 1 0x70\nR 0x10 1 0x0\n").unwrap();
//! let mut dev: Pflash = Pflash::new(Geometry::q35(4096).unwrap(), vec![0; 4096], Default::default(), Default::default()).unwrap();
//! let stats = replay(&mut dev, &lines).unwrap();
//! assert_eq!((stats.resets, stats.writes, stats.reads), (1, 2, 1));
//! ```

#![warn(missing_docs)]

use std::path::{Path, PathBuf};

use pflash::{Pflash, PflashEvents, Storage};

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
    /// The file is not a regular file (a FIFO, a device…), is too large, or could not be
    /// opened; names the file.
    #[error(transparent)]
    Input(#[from] safefile::InputError),
    /// An `.xz` trace decompresses to more than the limit ([`MAX_TRACE_LEN`]).
    #[error("{}: too large for a trace: decompresses to more than {limit} bytes", path.display())]
    TooLarge {
        /// The trace file.
        path: PathBuf,
        /// The most bytes of text accepted.
        limit: u64,
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
        message: format!("bad {what} {:?}", bounded(s)),
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
        other => Err(syntax(format!("unknown operation {:?}", bounded(other)))),
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

/// Largest trace read, as a file and, for `.xz`, decompressed: 256 MiB of text is some
/// 10 million operations, far beyond a firmware's boot (a recorded OVMF boot is under a
/// megabyte); parsed, it takes about as much memory again. An xz "bomb" (a few hundred KB
/// that expand to gigabytes) is stopped here instead of filling the memory.
pub const MAX_TRACE_LEN: u64 = 256 << 20;

/// Most characters of a token from a trace that an error message quotes.
const QUOTE_CHARS: usize = 64;

/// `text` cut to [`QUOTE_CHARS`] characters and `…`: a 100 MB token must not make a 100 MB
/// message.
fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(QUOTE_CHARS) {
        None => text.into(),
        Some((cut, _)) => format!("{}…", &text[..cut]).into(),
    }
}

/// Reads and parses a trace file, decompressing it if its name ends in `.xz`. The file must
/// be a regular file (a FIFO is refused at once, without waiting for a writer) of at most
/// [`MAX_TRACE_LEN`] bytes, and decompress to at most as many.
///
/// # Errors
///
/// [`TraceError::Input`] if the file is not a regular file, is too large or cannot be
/// opened, [`TraceError::TooLarge`] if it decompresses to too much, [`TraceError::Io`] if
/// it cannot be read, decompressed or is not UTF-8, else as [`parse_trace`].
pub fn read_trace_file(path: &Path) -> Result<Vec<TraceLine>, TraceError> {
    read_trace_file_within(path, MAX_TRACE_LEN)
}

fn read_trace_file_within(path: &Path, limit: u64) -> Result<Vec<TraceLine>, TraceError> {
    let io = |source| TraceError::Io {
        path: path.to_owned(),
        source,
    };
    let raw = safefile::read_input(path, safefile::Accept::RegularFile, limit, "a trace")?;
    let bytes = if path.extension().is_some_and(|e| e == "xz") {
        let too_large = || TraceError::TooLarge {
            path: path.to_owned(),
            limit,
        };
        // The index at the end of the stream declares the size: refuse a bomb at once.
        if xz_declared_size(&raw).is_some_and(|size| size > limit) {
            return Err(too_large());
        }
        // The index may lie, or be missing: the decompression itself stops at the limit.
        match xz_decompress_within(&raw, limit) {
            Ok(out) => out,
            Err(None) => return Err(too_large()),
            Err(Some(e)) => {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    e.to_string(),
                )))
            }
        }
    } else {
        raw
    };
    let text = String::from_utf8(bytes)
        .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    parse_trace(&text)
}

/// Decompresses an xz file into at most `limit` bytes: `Err(None)` if it holds more (the
/// decompression stops there), `Err(Some(_))` if it is not valid xz.
fn xz_decompress_within(raw: &[u8], limit: u64) -> Result<Vec<u8>, Option<lzma_rs::error::Error>> {
    let mut out = BoundedWriter {
        out: Vec::new(),
        limit,
        over: false,
    };
    let result = lzma_rs::xz_decompress(&mut &raw[..], &mut out);
    if out.over {
        return Err(None);
    }
    result.map_err(Some)?;
    Ok(out.out)
}

/// A `Vec` that refuses to grow past `limit` bytes (the write fails and `over` is set).
struct BoundedWriter {
    out: Vec<u8>,
    limit: u64,
    over: bool,
}

impl std::io::Write for BoundedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() as u64 + buf.len() as u64 > self.limit {
            self.over = true;
            return Err(std::io::Error::other("over the limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The uncompressed size that the index of the last stream of an xz file declares (the sum
/// of its records), or `None` if it cannot be found. Not verified (no CRC check): only used
/// to refuse early what the bounded decompression would refuse anyway.
fn xz_declared_size(data: &[u8]) -> Option<u64> {
    // Stream padding: zero bytes, a multiple of four, after the stream footer.
    let mut end = data.len();
    while end >= 4 && data[end - 4..end] == [0; 4] {
        end -= 4;
    }
    let data = &data[..end];
    // Stream footer: CRC32 (4), backward size (4), stream flags (2), magic "YZ".
    let footer = &data[data.len().checked_sub(12)?..];
    if &footer[10..] != b"YZ" {
        return None;
    }
    let backward = (u64::from(u32::from_le_bytes(footer[4..8].try_into().ok()?)) + 1) * 4;
    let index_start = data
        .len()
        .checked_sub(12 + usize::try_from(backward).ok()?)?;
    let index = &data[index_start..data.len() - 12];
    // Index indicator 0x00, number of records, then (unpadded size, uncompressed size) pairs.
    if index.first() != Some(&0) {
        return None;
    }
    let mut pos = 1;
    let varint = |pos: &mut usize| -> Option<u64> {
        let mut value = 0u64;
        for shift in 0..9 {
            let byte = *index.get(*pos)?;
            *pos += 1;
            value |= u64::from(byte & 0x7F) << (7 * shift);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    };
    let records = varint(&mut pos)?;
    let mut total = 0u64;
    for _ in 0..records {
        let _unpadded = varint(&mut pos)?;
        total = total.checked_add(varint(&mut pos)?)?;
    }
    Some(total)
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
pub fn replay<M: AsRef<[u8]> + AsMut<[u8]>, S: Storage, E: PflashEvents>(
    dev: &mut Pflash<M, S, E>,
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
        use pflash::{Geometry, Pflash};
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
        assert!(
            matches!(e, TraceError::Input(safefile::InputError::Io { .. })),
            "{e}"
        );
    }

    /// `lines` copies of a write line, xz-compressed.
    fn xz_trace(lines: usize) -> (Vec<u8>, usize) {
        let text = "W 0x0 1 0xff\n".repeat(lines);
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut text.as_bytes(), &mut xz).unwrap();
        (xz, text.len())
    }

    #[test]
    fn xz_decompression_stops_at_the_limit() {
        let (xz, len) = xz_trace(10_000);
        assert_eq!(xz_declared_size(&xz), Some(len as u64));
        assert_eq!(xz_decompress_within(&xz, len as u64).unwrap().len(), len);
        // Without the index's help (as if it lied): the writer stops the decompression.
        assert!(matches!(xz_decompress_within(&xz, 4096), Err(None)));
        assert!(matches!(
            xz_decompress_within(b"not xz at all", 4096),
            Err(Some(_))
        ));
        assert_eq!(xz_declared_size(b"too short"), None);
        assert_eq!(xz_declared_size(&[0; 64]), None);
    }

    #[test]
    fn an_xz_bomb_is_refused_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.txt.xz");
        // lzma-rs compresses nothing (literals only); xz makes a real bomb: 1.3 MB in 1 KB.
        let len = 100_000 * "W 0x0 1 0xff\n".len();
        let mut xz = std::process::Command::new(testkit::require_tool("xz"))
            .args(["-0", "-T1", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let text = "W 0x0 1 0xff\n".repeat(100_000);
        let mut stdin = xz.stdin.take().unwrap();
        let writer =
            std::thread::spawn(move || std::io::Write::write_all(&mut stdin, text.as_bytes()));
        let out = xz.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success() && out.stdout.len() < 10_000);
        std::fs::write(&path, &out.stdout).unwrap();
        let e = read_trace_file_within(&path, len as u64 - 1).unwrap_err();
        assert!(
            matches!(e, TraceError::TooLarge { limit, .. } if limit == len as u64 - 1),
            "{e}"
        );
        assert!(e.to_string().contains("too large for a trace"), "{e}");
        assert_eq!(
            read_trace_file_within(&path, len as u64).unwrap().len(),
            100_000
        );
    }

    #[test]
    fn a_fifo_or_a_huge_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("trace.txt");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = read_trace_file(&fifo).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let big = dir.path().join("big.txt");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_TRACE_LEN + 1)
            .unwrap();
        let e = read_trace_file(&big).unwrap_err();
        assert!(
            e.to_string().contains(&format!(
                "too large for a trace: more than {MAX_TRACE_LEN} bytes"
            )),
            "{e}"
        );
    }

    #[test]
    fn a_huge_token_makes_a_short_message() {
        let line = format!("W {} 1 0x1", "9".repeat(1_000_000));
        let e = parse_trace(&line).unwrap_err();
        assert!(e.to_string().len() < 200, "{} bytes", e.to_string().len());
    }
}
