//! The VM section of a migration: its encoding and verification (see [the module
//! documentation](super)).

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use sha2::{Digest, Sha256};

use super::{io, MigrateError};
use crate::exits::Exits;
use crate::layout::RAM_SIZE;
use crate::vm::VmSnapshot;

/// First bytes of the VM section.
pub const VM_MAGIC: [u8; 8] = *b"PFVMMIGR";
/// The VM section version this build writes and reads.
pub const VM_VERSION: u16 = 1;
const VM_HEADER_LEN: usize = 24;
const PAGE: usize = 4096;
const ZERO_PAGE: [u8; PAGE] = [0; PAGE];
/// Largest VM section body accepted: the RAM, the largest q35 code flash and the JSON.
const MAX_BODY: u64 = RAM_SIZE + (64 << 20) + (1 << 20);
/// The x87/SSE state, field by field (kvm-bindings has no serde for `kvm_fpu`).
#[derive(serde::Serialize, serde::Deserialize)]
struct Fpu {
    fpr: Vec<[u8; 16]>,
    fcw: u16,
    fsw: u16,
    ftwx: u8,
    last_opcode: u16,
    last_ip: u64,
    last_dp: u64,
    xmm: Vec<[u8; 16]>,
    mxcsr: u32,
}

impl From<&kvm_fpu> for Fpu {
    fn from(f: &kvm_fpu) -> Self {
        Fpu {
            fpr: f.fpr.to_vec(),
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm.to_vec(),
            mxcsr: f.mxcsr,
        }
    }
}

impl TryFrom<Fpu> for kvm_fpu {
    type Error = MigrateError;
    fn try_from(f: Fpu) -> Result<Self, MigrateError> {
        let bad = |what| MigrateError::Section(format!("the FPU state has a wrong {what}"));
        Ok(kvm_fpu {
            fpr: f.fpr.try_into().map_err(|_| bad("x87 register count"))?,
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm.try_into().map_err(|_| bad("XMM register count"))?,
            mxcsr: f.mxcsr,
            ..Default::default()
        })
    }
}

/// The JSON part of the VM section.
#[derive(serde::Serialize, serde::Deserialize)]
struct VcpuState {
    regs: kvm_regs,
    sregs: kvm_sregs,
    fpu: Fpu,
    exits: Exits,
    /// When the source paused the vCPU (nanoseconds since the Unix epoch, source's clock).
    paused_at_unix_nanos: u64,
}

/// The VM besides the flash, as the VM section carries it.
#[derive(Debug)]
pub struct VmSection {
    /// Registers, RAM, code image, exit counters.
    pub snapshot: VmSnapshot,
    /// When the source paused (its wall clock), for the downtime.
    pub paused_at: SystemTime,
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Encodes the VM section (header, body, digest).
///
/// # Errors
///
/// The registers cannot be encoded (they always can).
pub fn encode_section(section: &VmSection) -> Result<Vec<u8>, MigrateError> {
    let s = &section.snapshot;
    let state = VcpuState {
        regs: s.regs,
        sregs: s.sregs,
        fpu: Fpu::from(&s.fpu),
        exits: s.exits,
        paused_at_unix_nanos: unix_nanos(section.paused_at),
    };
    let json = serde_json::to_vec(&state).map_err(MigrateError::VcpuState)?;
    let mut body = Vec::with_capacity(json.len() + s.code.len() + (1 << 20));
    body.extend_from_slice(&(json.len() as u32).to_le_bytes());
    body.extend_from_slice(&json);
    body.extend_from_slice(&(s.ram.len() as u64).to_le_bytes());
    let pages: Vec<&[u8]> = s.ram.chunks(PAGE).collect();
    let mut bitmap = vec![0u8; pages.len().div_ceil(8)];
    for (i, page) in pages.iter().enumerate() {
        // A slice comparison is a memcmp, fast even in a debug build.
        if **page != ZERO_PAGE[..page.len()] {
            bitmap[i / 8] |= 1 << (i % 8);
        }
    }
    body.extend_from_slice(&bitmap);
    for (i, page) in pages.iter().enumerate() {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            body.extend_from_slice(page);
        }
    }
    body.extend_from_slice(&(s.code.len() as u64).to_le_bytes());
    body.extend_from_slice(&s.code);
    let mut out = Vec::with_capacity(VM_HEADER_LEN + body.len() + 32);
    out.extend_from_slice(&VM_MAGIC);
    out.extend_from_slice(&VM_VERSION.to_le_bytes());
    out.extend_from_slice(&VM_VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    Ok(out)
}

/// A cursor over the body that names what is missing.
struct Body<'a>(&'a [u8]);

impl<'a> Body<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], MigrateError> {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if self.0.len() < n {
            return Err(MigrateError::Section(format!(
                "the body ends in {what} ({n} bytes needed, {} left)",
                self.0.len()
            )));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self, what: &str) -> Result<u64, MigrateError> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }
}

/// Reads and verifies a VM section; returns it and its size on the wire.
///
/// # Errors
///
/// [`MigrateError::Section`] for a foreign, newer, corrupt or truncated section or a RAM
/// size other than this VMM's; [`MigrateError::VcpuState`] for a vCPU state that is not
/// this VMM's JSON; [`MigrateError::Io`].
pub fn read_section(mut r: impl Read) -> Result<(VmSection, u64), MigrateError> {
    let mut header = [0u8; VM_HEADER_LEN];
    r.read_exact(&mut header)
        .map_err(io("reading the VM section header"))?;
    if header[..8] != VM_MAGIC {
        return Err(MigrateError::Section(format!(
            "it starts with {:02x?}, not \"PFVMMIGR\"",
            &header[..8]
        )));
    }
    let version = u16::from_le_bytes([header[8], header[9]]);
    let needs = u16::from_le_bytes([header[10], header[11]]);
    if needs > VM_VERSION {
        return Err(MigrateError::Section(format!(
            "format version {version} needs a reader of version {needs}; this build reads \
             version {VM_VERSION}"
        )));
    }
    let len = u64::from_le_bytes(header[16..24].try_into().unwrap_or_default());
    if len > MAX_BODY {
        return Err(MigrateError::Section(format!(
            "body length {len} exceeds the largest VM ({MAX_BODY})"
        )));
    }
    // Grows as data arrives: a corrupt length cannot allocate more than was sent.
    let mut body = Vec::new();
    (&mut r)
        .take(len)
        .read_to_end(&mut body)
        .map_err(io("reading the VM section"))?;
    if body.len() as u64 != len {
        return Err(MigrateError::Section(format!(
            "truncated: {} of {len} body bytes arrived",
            body.len()
        )));
    }
    let mut digest = [0u8; 32];
    r.read_exact(&mut digest)
        .map_err(io("reading the VM section digest"))?;
    let mut hasher = Sha256::new();
    hasher.update(header);
    hasher.update(&body);
    if hasher.finalize().as_slice() != digest {
        return Err(MigrateError::Section("SHA-256 digest mismatch".into()));
    }

    let mut b = Body(&body);
    let json_len = b.take(4, "the JSON length")?;
    let json_len = u32::from_le_bytes(json_len.try_into().unwrap_or_default());
    let state: VcpuState = serde_json::from_slice(b.take(json_len.into(), "the vCPU state")?)
        .map_err(MigrateError::VcpuState)?;
    let ram_len = b.u64("the RAM size")?;
    if ram_len != RAM_SIZE {
        return Err(MigrateError::Section(format!(
            "the source VM has {ram_len} bytes of RAM, this VMM {RAM_SIZE}"
        )));
    }
    let pages = (ram_len as usize).div_ceil(PAGE);
    let bitmap = b.take(pages.div_ceil(8) as u64, "the RAM page bitmap")?;
    let mut ram = vec![0u8; ram_len as usize];
    for (i, page) in ram.chunks_mut(PAGE).enumerate() {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            page.copy_from_slice(b.take(page.len() as u64, "the RAM pages")?);
        }
    }
    let code_len = b.u64("the code image length")?;
    let code = b.take(code_len, "the code image")?.to_vec();
    if !b.0.is_empty() {
        return Err(MigrateError::Section(format!(
            "{} bytes follow the code image",
            b.0.len()
        )));
    }
    let snapshot = VmSnapshot {
        regs: state.regs,
        sregs: state.sregs,
        fpu: state.fpu.try_into()?,
        ram,
        code,
        exits: state.exits,
    };
    let paused_at = UNIX_EPOCH + Duration::from_nanos(state.paused_at_unix_nanos);
    let wire = (VM_HEADER_LEN + body.len() + 32) as u64;
    Ok((
        VmSection {
            snapshot,
            paused_at,
        },
        wire,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section() -> VmSection {
        let mut ram = vec![0u8; RAM_SIZE as usize];
        ram[5 * PAGE + 7] = 0x5a;
        VmSection {
            snapshot: VmSnapshot {
                regs: kvm_regs {
                    rip: 0xfff0,
                    ..Default::default()
                },
                sregs: kvm_sregs::default(),
                fpu: kvm_fpu {
                    fcw: 0x37f,
                    ..Default::default()
                },
                ram,
                code: vec![0x90; 8192],
                exits: Exits::default(),
            },
            paused_at: SystemTime::now(),
        }
    }

    #[test]
    fn a_section_round_trips_and_skips_zero_pages() {
        let bytes = encode_section(&section()).unwrap();
        assert!(bytes.len() < 3 * PAGE + 8192, "{} bytes", bytes.len());
        let (back, wire) = read_section(&bytes[..]).unwrap();
        assert_eq!(wire, bytes.len() as u64);
        assert_eq!(back.snapshot.regs.rip, 0xfff0);
        assert_eq!(back.snapshot.fpu.fcw, 0x37f);
        assert_eq!(back.snapshot.ram[5 * PAGE + 7], 0x5a);
        assert_eq!(back.snapshot.ram, section().snapshot.ram);
        assert_eq!(back.snapshot.code, vec![0x90; 8192]);
    }

    #[test]
    fn a_flipped_bit_a_newer_version_or_a_cut_are_refused() {
        let bytes = encode_section(&section()).unwrap();
        let mut flipped = bytes.clone();
        flipped[VM_HEADER_LEN + 40] ^= 1;
        let e = read_section(&flipped[..]).unwrap_err().to_string();
        assert!(e.contains("digest"), "{e}");
        let mut newer = bytes.clone();
        newer[10] = 2;
        let e = read_section(&newer[..]).unwrap_err().to_string();
        assert!(e.contains("needs a reader of version 2"), "{e}");
        let e = read_section(&bytes[..bytes.len() - 100])
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
