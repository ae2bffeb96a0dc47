//! Encoding of the stream: header, device state, records, replies; and the checks a reader
//! makes before it trusts a header.

use std::io::{self, BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::Path;

use crc32fast::Hasher;
use pflash::{Compat, Geometry, PflashState, WriteBuffer};

use crate::*;

/// The code of a QEMU compatibility in the header (byte 41); never 0, which version-1
/// streams have there.
pub(crate) fn compat_code(compat: Compat) -> u8 {
    match compat {
        Compat::Qemu7_2 => 1,
        Compat::Qemu10_0 => 2,
    }
}

/// The inverse of [`compat_code`].
pub(crate) fn compat_from_code(code: u8) -> Option<Compat> {
    match code {
        1 => Some(Compat::Qemu7_2),
        2 => Some(Compat::Qemu10_0),
        _ => None,
    }
}

pub(crate) fn encode_header(geometry: &Geometry, chunk: u64) -> [u8; HEADER_LEN + 4] {
    let mut h = [0u8; HEADER_LEN + 4];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&geometry.sector_len.to_le_bytes());
    h[24..28].copy_from_slice(&geometry.num_blocks.to_le_bytes());
    h[28] = geometry.bank_width;
    h[29] = geometry.device_width;
    h[30] = geometry.max_device_width;
    h[31] = u8::from(geometry.big_endian);
    for (i, id) in geometry.id.iter().enumerate() {
        h[32 + 2 * i..34 + 2 * i].copy_from_slice(&id.to_le_bytes());
    }
    h[40] = u8::from(geometry.read_only);
    h[41] = compat_code(geometry.compat);
    h[44..48].copy_from_slice(&(chunk as u32).to_le_bytes());
    let crc = crc32fast::hash(&h[..HEADER_LEN]);
    h[HEADER_LEN..].copy_from_slice(&crc.to_le_bytes());
    h
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

pub(crate) fn encode_state(state: &PflashState) -> Vec<u8> {
    let buf = state.write_buffer.as_ref();
    let len = buf.map_or(0, |b| b.bytes.len());
    let mut p = Vec::with_capacity(STATE_PREFIX_LEN + len);
    p.extend_from_slice(&[
        state.wcycle,
        state.cmd,
        state.status,
        u8::from(state.array_mode),
        u8::from(buf.is_some()),
        0,
        0,
        0,
    ]);
    p.extend_from_slice(&state.counter.to_le_bytes());
    p.extend_from_slice(&buf.map_or(0, |b| b.offset).to_le_bytes());
    p.extend_from_slice(&buf.map_or(0, |b| b.written.start).to_le_bytes());
    p.extend_from_slice(&buf.map_or(0, |b| b.written.end).to_le_bytes());
    p.extend_from_slice(&(len as u32).to_le_bytes());
    if let Some(b) = buf {
        p.extend_from_slice(&b.bytes);
    }
    p
}

pub(crate) fn decode_state(p: &[u8]) -> Result<PflashState, &'static str> {
    if p.len() < STATE_PREFIX_LEN {
        return Err("device state record too short");
    }
    let flag = |b: u8| match b {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err("device state flag is neither 0 nor 1"),
    };
    if p[5..8] != [0; 3] {
        return Err("device state reserved bytes are not zero");
    }
    let has_buffer = flag(p[4])?;
    let len = u32_at(p, 40) as usize;
    if p.len() != STATE_PREFIX_LEN + len {
        return Err("device state record length does not match its buffer length");
    }
    let write_buffer = if has_buffer {
        Some(WriteBuffer {
            offset: u64_at(p, 16),
            written: u64_at(p, 24)..u64_at(p, 32),
            bytes: p[STATE_PREFIX_LEN..].to_vec(),
        })
    } else {
        if p[16..44].iter().any(|&b| b != 0) {
            return Err("device state has buffer fields but no buffer");
        }
        None
    };
    Ok(PflashState {
        wcycle: p[0],
        cmd: p[1],
        status: p[2],
        array_mode: flag(p[3])?,
        counter: u64_at(p, 8),
        write_buffer,
    })
}

/// Framing, sequence numbers and checksums of the outgoing stream.
pub(crate) struct StreamWriter<W: Write> {
    pub(crate) w: BufWriter<W>,
    pub(crate) stream_crc: Hasher,
    pub(crate) offset: u64,
    pub(crate) seq: u32,
}

impl<W: Write> StreamWriter<W> {
    pub(crate) fn new(w: W) -> Self {
        StreamWriter {
            w: BufWriter::with_capacity(64 << 10, w),
            stream_crc: Hasher::new(),
            offset: 0,
            seq: 0,
        }
    }

    pub(crate) fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.w.write_all(bytes)?;
        self.stream_crc.update(bytes);
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Writes one record made of `parts`; returns its size on the wire.
    pub(crate) fn record(&mut self, kind: u8, parts: &[&[u8]]) -> io::Result<u64> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut head = [0u8; RECORD_HEADER_LEN];
        head[0] = kind;
        head[4..8].copy_from_slice(&self.seq.to_le_bytes());
        head[8..12].copy_from_slice(&(len as u32).to_le_bytes());
        let mut crc = Hasher::new();
        crc.update(&head);
        self.w.write_all(&head)?;
        for part in parts {
            crc.update(part);
            self.w.write_all(part)?;
        }
        // The stream CRC is the record CRC combined in, so content is hashed once.
        self.stream_crc.combine(&crc);
        let sum = crc.finalize().to_le_bytes();
        self.w.write_all(&sum)?;
        self.stream_crc.update(&sum);
        self.seq += 1;
        let wire = (RECORD_HEADER_LEN + len + 4) as u64;
        self.offset += wire;
        Ok(wire)
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// Reads one reply of the destination.
pub(crate) fn read_reply<R: Read>(r: &mut R) -> io::Result<(u8, String)> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head)?;
    let len = usize::from(u16_at(&head, 6));
    let mut rest = vec![0u8; len + 4];
    r.read_exact(&mut rest)?;
    let mut crc = Hasher::new();
    crc.update(&head);
    crc.update(&rest[..len]);
    if head[..4] != REPLY_MAGIC || crc.finalize() != u32_at(&rest, len) {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            "the destination's reply is not a pflash migration reply",
        ));
    }
    Ok((head[4], String::from_utf8_lossy(&rest[..len]).into_owned()))
}

pub(crate) fn write_reply<W: Write>(w: &mut W, code: u8, message: &str) -> io::Result<()> {
    let message = &message.as_bytes()[..message.len().min(u16::MAX as usize)];
    let mut frame = Vec::with_capacity(12 + message.len());
    frame.extend_from_slice(&REPLY_MAGIC);
    frame.extend_from_slice(&[code, 0]);
    frame.extend_from_slice(&(message.len() as u16).to_le_bytes());
    frame.extend_from_slice(message);
    let crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    w.write_all(&frame)?;
    w.flush()
}

// ---------------------------------------------------------------------------------------
// Destination side

/// Reading side: offsets, sequence numbers and the whole-stream CRC.
pub(crate) struct StreamReader<R: Read> {
    pub(crate) r: BufReader<R>,
    pub(crate) stream_crc: Hasher,
    pub(crate) offset: u64,
    pub(crate) seq: u32,
}

impl<R: Read> StreamReader<R> {
    pub(crate) fn read(
        &mut self,
        buf: &mut [u8],
        what: &'static str,
    ) -> Result<(), MigrationError> {
        match self.r.read_exact(buf) {
            Ok(()) => {
                self.stream_crc.update(buf);
                self.offset += buf.len() as u64;
                Ok(())
            }
            // A reset is a source that died with our answer unread: its stream ends there.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof
                        | ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                ) =>
            {
                Err(MigrationError::Truncated {
                    offset: self.offset,
                    what,
                })
            }
            Err(e) => Err(io_error("reading the migration stream")(e)),
        }
    }
}

pub(crate) fn corrupt(offset: u64, what: impl Into<String>) -> MigrationError {
    MigrationError::Corrupt {
        offset,
        what: what.into(),
    }
}

/// Refuses a stream this build cannot read: one that needs a newer reader, or one older than
/// [`OLDEST_READABLE_VERSION`].
pub(crate) fn check_version(version: u16, needs: u16) -> Result<(), MigrationError> {
    if needs > VERSION || needs == 0 || version < needs || version < OLDEST_READABLE_VERSION {
        return Err(MigrationError::Version { version, needs });
    }
    Ok(())
}

/// Checks the magic, the version and the CRC of a header, in that order, and decodes it.
pub(crate) fn decode_header(h: &[u8; HEADER_LEN + 4]) -> Result<(Geometry, u64), MigrationError> {
    if h[..8] != MAGIC {
        let mut found = [0u8; 8];
        found.copy_from_slice(&h[..8]);
        return Err(MigrationError::Foreign { found });
    }
    let (version, needs) = (u16_at(h, 8), u16_at(h, 10));
    check_version(version, needs)?;
    if crc32fast::hash(&h[..HEADER_LEN]) != u32_at(h, HEADER_LEN) {
        return Err(corrupt(0, "header CRC mismatch"));
    }
    if u32_at(h, 12) != 0 || h[42..44] != [0; 2] || h[40] > 1 || h[31] > 1 {
        return Err(corrupt(0, "unknown header flags"));
    }
    let compat = if version == 1 {
        // Version 1 had no compatibility byte: its writers modelled QEMU 7.2 only.
        if h[41] != 0 {
            return Err(corrupt(0, "unknown header flags"));
        }
        Compat::Qemu7_2
    } else {
        compat_from_code(h[41]).ok_or_else(|| {
            corrupt(
                41,
                format!(
                    "unknown QEMU compatibility code {} (this build knows 1 qemu-7.2 and 2 \
                     qemu-10.0)",
                    h[41]
                ),
            )
        })?
    };
    let geometry = Geometry {
        sector_len: u64_at(h, 16),
        num_blocks: u32_at(h, 24),
        bank_width: h[28],
        device_width: h[29],
        max_device_width: h[30],
        big_endian: h[31] == 1,
        id: [u16_at(h, 32), u16_at(h, 34), u16_at(h, 36), u16_at(h, 38)],
        read_only: h[40] == 1,
        compat,
    };
    Ok((geometry, u64::from(u32_at(h, 44))))
}

/// Compares the incoming geometry with the local one.
pub(crate) fn check_geometry(
    incoming: &Geometry,
    local: &Geometry,
    backing: &Path,
) -> Result<(), MigrationError> {
    if incoming.size() != local.size() {
        return Err(MigrationError::SizeMismatch {
            backing: backing.to_path_buf(),
            incoming: incoming.size(),
            local: local.size(),
        });
    }
    let mut differences = Vec::new();
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            differences.push(format!("{name} is {a} incoming, {b} locally"));
        }
    };
    field(
        "sector length",
        format!("{:#x}", incoming.sector_len),
        format!("{:#x}", local.sector_len),
    );
    field(
        "bank width",
        incoming.bank_width.to_string(),
        local.bank_width.to_string(),
    );
    field(
        "device width",
        incoming.device_width.to_string(),
        local.device_width.to_string(),
    );
    field(
        "max device width",
        incoming.max_device_width.to_string(),
        local.max_device_width.to_string(),
    );
    field(
        "big-endian",
        incoming.big_endian.to_string(),
        local.big_endian.to_string(),
    );
    field(
        "ids",
        format!("{:#x?}", incoming.id),
        format!("{:#x?}", local.id),
    );
    field(
        "read-only",
        incoming.read_only.to_string(),
        local.read_only.to_string(),
    );
    if differences.is_empty() {
        Ok(())
    } else {
        Err(MigrationError::GeometryMismatch {
            backing: backing.to_path_buf(),
            differences: differences.join("; "),
        })
    }
}
