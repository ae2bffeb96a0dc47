//! Writing a whole new image: header, tables, data clusters and fresh refcounts.
//!
//! Clusters are numbered in the order they are allocated and laid out back to back, so a
//! cluster's file offset is its number times the cluster size. Tables are kept as entry
//! vectors until the end because their COPIED bits depend on the final refcounts.

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::header::{Header, EXT_BACKING_FORMAT, EXT_BITMAPS, EXT_CRYPTO, EXT_DATA_FILE};
use crate::map::{self, Cluster, COPIED};
use crate::{unsupported, Qcow2Error};

/// The most old L2 entries a rewrite visits (the new content's are bounded by its length):
/// tables shared by many snapshots are walked once per reference (that is how their data clusters' refcounts are counted), so without a bound a
/// small crafted file could cost hours. 2^26 covers 512 snapshots of a 64 MiB store with
/// 512-byte clusters.
const MAX_VISITS: u64 = 1 << 26;

/// The most bytes compressed clusters may inflate to in one rewrite (each distinct one once).
const MAX_INFLATED: u64 = 1 << 30;

/// Room for the metadata a rewrite adds (refcounts, tables) beyond what the input holds.
const OUTPUT_SLACK: u64 = 64 << 20;

/// One internal snapshot to write: its table entry (verbatim) and its old L1 table.
pub(crate) struct SnapshotPlan<'a> {
    pub entry: &'a [u8],
    pub l1_offset: u64,
    pub l1_size: u32,
}

/// Everything the new file is made of.
pub(crate) struct Plan<'a> {
    /// The source file (empty for [`crate::create`]) and the header describing its geometry.
    pub file: &'a [u8],
    pub header: &'a Header,
    /// The header bytes to start from (`header_length` of them); table fields are patched.
    pub header_bytes: Vec<u8>,
    /// Extensions to keep, in order.
    pub extensions: Vec<(u32, &'a [u8])>,
    /// The active image's new content (`header.size` bytes) and its L1 size.
    pub content: &'a [u8],
    pub l1_size: u32,
    /// The old active L1 table, whose entries beyond the virtual size are carried over.
    pub old_l1: Option<u64>,
    pub snapshots: Vec<SnapshotPlan<'a>>,
}

/// What a cluster of the new file holds.
enum Slot<'a> {
    Header,
    Data(Cow<'a, [u8]>),
    /// A table (L1 or L2) of host offsets without COPIED bits; an L1 table may span clusters.
    Table(Vec<u64>),
    /// The snapshot table.
    Bytes(Vec<u8>),
    /// Covered by a multi-cluster piece that starts earlier.
    Continuation,
}

struct Builder<'a> {
    file: &'a [u8],
    header: &'a Header,
    cs: u64,
    slots: Vec<Slot<'a>>,
    refs: Vec<u64>,
    max_ref: u64,
    data_by_hash: HashMap<u64, Vec<u64>>,
    /// Old (offset, compressed) → new cluster, so a shared old cluster is hashed once.
    data_by_old: HashMap<(u64, bool), u64>,
    l2_by_hash: HashMap<u64, Vec<u64>>,
    visits: u64,
    inflated: u64,
    max_bytes: u64,
}

fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

impl<'a> Builder<'a> {
    fn alloc(&mut self, slot: Slot<'a>, clusters: u64) -> Result<u64, Qcow2Error> {
        let idx = self.slots.len() as u64;
        if (idx + clusters) * self.cs > self.max_bytes {
            return Err(unsupported(format!(
                "a rewrite of more than {} bytes (compressed clusters expanding, or clusters \
                 shared more often than the refcounts can count)",
                self.max_bytes
            )));
        }
        self.slots.push(slot);
        self.refs.push(1);
        for _ in 1..clusters {
            self.slots.push(Slot::Continuation);
            self.refs.push(1);
        }
        Ok(idx)
    }

    /// A reference to a data cluster holding `bytes` (exactly one cluster): an existing one
    /// with the same content if its refcount has room, else a new one. 0 for zeros, which
    /// become unallocated: without a backing file they read as zeros in both versions.
    fn intern_data(&mut self, bytes: Cow<'a, [u8]>) -> Result<u64, Qcow2Error> {
        if is_zero(&bytes) {
            return Ok(0);
        }
        let h = hash_of(&*bytes);
        // Newest first: older copies are the ones whose refcount filled up.
        if let Some(found) = self.data_by_hash.get(&h).and_then(|c| {
            c.iter().rev().copied().find(|&i| {
                self.refs[i as usize] < self.max_ref
                    && matches!(&self.slots[i as usize], Slot::Data(d) if **d == *bytes)
            })
        }) {
            self.refs[found as usize] += 1;
            return Ok(found * self.cs);
        }
        let idx = self.alloc(Slot::Data(bytes), 1)?;
        self.data_by_hash.entry(h).or_default().push(idx);
        Ok(idx * self.cs)
    }

    /// The new L2 entry (offset without flags) for an old guest cluster.
    fn translate(&mut self, cluster: Cluster) -> Result<u64, Qcow2Error> {
        let key = match cluster {
            Cluster::Zero => return Ok(0),
            Cluster::Data(offset) => (offset, false),
            Cluster::Compressed { offset, .. } => (offset, true),
        };
        if let Some(&idx) = self.data_by_old.get(&key) {
            if idx == 0 {
                return Ok(0);
            }
            if self.refs[idx as usize] < self.max_ref {
                self.refs[idx as usize] += 1;
                return Ok(idx * self.cs);
            }
            // Full: with narrow refcounts each further reference would need its own copy,
            // a cluster per visit; QEMU never makes such images (no snapshots below 16 bits).
            if self.max_ref < u64::from(u16::MAX) {
                return Err(unsupported(format!(
                    "a cluster shared more often than {}-bit refcounts can count",
                    1u32 << self.header.refcount_order
                )));
            }
        }
        let cs = self.cs as usize;
        let bytes: Cow<'a, [u8]> = match cluster {
            Cluster::Data(offset) if offset as usize + cs <= self.file.len() => {
                Cow::Borrowed(&self.file[offset as usize..offset as usize + cs])
            }
            _ => {
                if let Cluster::Compressed { .. } = cluster {
                    // Each distinct compressed offset inflates a whole cluster, even when it
                    // comes out as zeros and allocates nothing: bound the work.
                    self.inflated += self.cs;
                    if self.inflated > MAX_INFLATED {
                        return Err(unsupported(format!(
                            "more than {MAX_INFLATED} bytes of compressed clusters"
                        )));
                    }
                }
                let mut owned = vec![0u8; cs];
                map::read_cluster(self.file, self.header, cluster, &mut owned)?;
                Cow::Owned(owned)
            }
        };
        let new = self.intern_data(bytes)?;
        self.data_by_old.insert(key, new / self.cs);
        Ok(new)
    }

    fn visit(&mut self, n: u64) -> Result<(), Qcow2Error> {
        self.visits += n;
        if self.visits > MAX_VISITS {
            return Err(unsupported(format!(
                "more than {MAX_VISITS} cluster references (too many snapshots sharing tables)"
            )));
        }
        Ok(())
    }

    /// A reference to an L2 table with these entries, shared with an identical one if any.
    /// The data clusters' refcounts were already counted while building `entries`, once
    /// per path from an L1 table, which is how `qemu-img check` counts them.
    fn intern_l2(&mut self, entries: Vec<u64>) -> Result<u64, Qcow2Error> {
        if entries.iter().all(|&e| e == 0) {
            return Ok(0);
        }
        let h = hash_of(&entries);
        if let Some(found) = self.l2_by_hash.get(&h).and_then(|c| {
            c.iter().rev().copied().find(|&i| {
                self.refs[i as usize] < self.max_ref
                    && matches!(&self.slots[i as usize], Slot::Table(t) if *t == entries)
            })
        }) {
            self.refs[found as usize] += 1;
            return Ok(found * self.cs);
        }
        let idx = self.alloc(Slot::Table(entries), 1)?;
        self.l2_by_hash.entry(h).or_default().push(idx);
        Ok(idx * self.cs)
    }

    /// The new L2 table for the old one at `l2` (a snapshot's, or the active image's past
    /// its virtual size).
    fn translate_l2(&mut self, l2: u64) -> Result<u64, Qcow2Error> {
        let per_l2 = self.header.l2_entries();
        self.visit(per_l2)?;
        let mut entries = Vec::with_capacity(per_l2 as usize);
        for j in 0..per_l2 {
            let cluster = map::l2_entry(self.file, self.header, l2 + j * 8)?;
            entries.push(self.translate(cluster)?);
        }
        self.intern_l2(entries)
    }

    /// Allocates an L1 table (0 for an empty one).
    fn alloc_l1(&mut self, entries: Vec<u64>) -> Result<u64, Qcow2Error> {
        if entries.is_empty() {
            return Ok(0);
        }
        let clusters = (entries.len() as u64 * 8).div_ceil(self.cs);
        Ok(self.alloc(Slot::Table(entries), clusters)? * self.cs)
    }

    fn active_l1(&mut self, plan: &Plan<'a>) -> Result<u64, Qcow2Error> {
        let per_l2 = self.header.l2_entries();
        let size = plan.content.len() as u64;
        let cs = self.cs;
        let mut l1 = Vec::with_capacity(plan.l1_size as usize);
        for i in 0..u64::from(plan.l1_size) {
            let old_l2 = match plan.old_l1 {
                Some(at) => map::l1_entry(self.file, self.header, at + i * 8)?,
                None => 0,
            };
            let first = i * per_l2 * cs;
            if first >= size {
                // Past the disk: leftover VM state, kept as it was.
                l1.push(if old_l2 == 0 {
                    0
                } else {
                    self.translate_l2(old_l2)?
                });
                continue;
            }
            let mut entries = Vec::with_capacity(per_l2 as usize);
            for j in 0..per_l2 {
                let start = first + j * cs;
                let entry = if start < size {
                    let end = (start + cs).min(size);
                    let bytes = &plan.content[start as usize..end as usize];
                    if bytes.len() as u64 == cs {
                        self.intern_data(Cow::Borrowed(bytes))?
                    } else {
                        let mut padded = bytes.to_vec();
                        padded.resize(cs as usize, 0);
                        self.intern_data(Cow::Owned(padded))?
                    }
                } else if old_l2 != 0 {
                    let cluster = map::l2_entry(self.file, self.header, old_l2 + j * 8)?;
                    self.translate(cluster)?
                } else {
                    0
                };
                entries.push(entry);
            }
            l1.push(self.intern_l2(entries)?);
        }
        self.alloc_l1(l1)
    }

    fn snapshot_l1(&mut self, snap: &SnapshotPlan<'a>) -> Result<u64, Qcow2Error> {
        let mut l1 = Vec::with_capacity(snap.l1_size as usize);
        for i in 0..u64::from(snap.l1_size) {
            let old_l2 = map::l1_entry(self.file, self.header, snap.l1_offset + i * 8)?;
            l1.push(if old_l2 == 0 {
                0
            } else {
                self.translate_l2(old_l2)?
            });
        }
        self.alloc_l1(l1)
    }
}

/// Clusters of refcount blocks and table needed for `used` clusters plus themselves.
fn refcount_layout(used: u64, cs: u64, refcount_order: u32) -> (u64, u64) {
    let per_block = (cs * 8) >> refcount_order;
    let (mut blocks, mut table) = (0u64, 0u64);
    loop {
        let need_blocks = (used + blocks + table).div_ceil(per_block);
        let need_table = (need_blocks * 8).div_ceil(cs).max(1);
        if need_blocks == blocks && need_table == table {
            return (blocks, table);
        }
        blocks = need_blocks;
        table = need_table;
    }
}

fn put_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut [u8], at: usize, v: u64) {
    out[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// Whether an extension survives a rewrite: the bitmaps' data would be stale (their
/// autoclear bit is cleared too); backing format, encryption and data file never reach
/// here on an accepted image, and are dropped rather than left dangling.
pub(crate) fn keep_extension(kind: u32) -> bool {
    !matches!(
        kind,
        EXT_BACKING_FORMAT | EXT_BITMAPS | EXT_CRYPTO | EXT_DATA_FILE
    )
}

/// Builds the new file.
pub(crate) fn build(plan: Plan<'_>) -> Result<Vec<u8>, Qcow2Error> {
    let header = plan.header;
    let cs = header.cluster_size();
    let refcount_bits = 1u32 << header.refcount_order;
    let mut b = Builder {
        file: plan.file,
        header,
        cs,
        slots: Vec::new(),
        refs: Vec::new(),
        max_ref: if refcount_bits == 64 {
            u64::MAX
        } else {
            (1u64 << refcount_bits) - 1
        },
        data_by_hash: HashMap::new(),
        data_by_old: HashMap::new(),
        l2_by_hash: HashMap::new(),
        visits: 0,
        inflated: 0,
        // A rewrite deduplicates, so it is normally smaller than old file plus new content;
        // only compressed clusters legitimately grow, hence the factor.
        max_bytes: 4 * (plan.file.len() as u64 + plan.content.len() as u64) + OUTPUT_SLACK,
    };
    b.alloc(Slot::Header, 1)?;
    let l1_offset = b.active_l1(&plan)?;
    let mut table = Vec::new();
    for snap in &plan.snapshots {
        let offset = b.snapshot_l1(snap)?;
        let start = table.len();
        table.extend_from_slice(snap.entry);
        table.resize(table.len().div_ceil(8) * 8, 0);
        put_u64(&mut table, start, offset);
    }
    let snapshots_offset = if table.is_empty() {
        0
    } else {
        let clusters = (table.len() as u64).div_ceil(cs);
        b.alloc(Slot::Bytes(table), clusters)? * cs
    };

    let used = b.slots.len() as u64;
    let (blocks, rt_clusters) = refcount_layout(used, cs, header.refcount_order);
    let rt_offset = used * cs;
    let blocks_start = used + rt_clusters;
    let total = blocks_start + blocks;
    let mut out = vec![0u8; (total * cs) as usize];

    // Header, extensions, end marker.
    let mut head = plan.header_bytes;
    put_u64(&mut head, 8, 0);
    put_u32(&mut head, 16, 0);
    put_u64(&mut head, 24, header.size);
    put_u32(&mut head, 32, 0);
    put_u32(&mut head, 36, plan.l1_size);
    put_u64(&mut head, 40, l1_offset);
    put_u64(&mut head, 48, rt_offset);
    put_u32(&mut head, 56, rt_clusters as u32);
    put_u32(&mut head, 60, plan.snapshots.len() as u32);
    put_u64(&mut head, 64, snapshots_offset);
    if header.version >= 3 {
        // Refcounts are exact now, so the image is clean; autoclear bits must be cleared
        // by any writer that does not maintain what they vouch for.
        put_u64(
            &mut head,
            72,
            header.incompatible & !crate::header::INCOMPAT_DIRTY,
        );
        put_u64(&mut head, 88, 0);
    }
    for (kind, data) in &plan.extensions {
        head.extend_from_slice(&kind.to_be_bytes());
        head.extend_from_slice(&(data.len() as u32).to_be_bytes());
        head.extend_from_slice(data);
        head.resize(head.len().div_ceil(8) * 8, 0);
    }
    let head_len = head.len().min(cs as usize);
    out[..head_len].copy_from_slice(&head[..head_len]);
    // The end-of-extensions marker is the zeros already there.

    let refs = &b.refs;
    let copied = |offset: u64| -> u64 {
        if offset != 0 && refs[(offset / cs) as usize] == 1 {
            offset | COPIED
        } else {
            offset
        }
    };
    for (idx, slot) in b.slots.iter().enumerate() {
        let at = idx * cs as usize;
        match slot {
            Slot::Header | Slot::Continuation => {}
            Slot::Data(d) => out[at..at + d.len()].copy_from_slice(d),
            Slot::Table(entries) => {
                for (k, &e) in entries.iter().enumerate() {
                    put_u64(&mut out, at + k * 8, copied(e));
                }
            }
            Slot::Bytes(bytes) => out[at..at + bytes.len()].copy_from_slice(bytes),
        }
    }

    // Refcount table and blocks; the refcount structures themselves count 1 each.
    for k in 0..blocks {
        put_u64(
            &mut out,
            (rt_offset + k * 8) as usize,
            (blocks_start + k) * cs,
        );
    }
    let per_block = (cs * 8) >> header.refcount_order;
    for cluster in 0..total {
        let value = if cluster < used {
            b.refs[cluster as usize]
        } else {
            1
        };
        let block = blocks_start + cluster / per_block;
        let index = cluster % per_block;
        let base = block * cs;
        if refcount_bits >= 8 {
            let width = u64::from(refcount_bits / 8);
            let at = (base + index * width) as usize;
            let be = value.to_be_bytes();
            out[at..at + width as usize].copy_from_slice(&be[8 - width as usize..]);
        } else {
            let bit = index * u64::from(refcount_bits);
            out[(base + bit / 8) as usize] |= (value as u8) << (bit % 8);
        }
    }
    Ok(out)
}
