//! Deterministic mutation test of the parser.
//!
//! A few hundred damaged images, made with a fixed-seed PRNG from the Debian OVMF/AAVMF
//! templates, the built-in blank layouts and two synthetic stores, go through
//! [`Varstore::parse`] and everything reachable from its result. For every image:
//!
//! * nothing panics, and the parse returns (a watchdog fails the test if one case takes more
//!   than [`CASE_TIMEOUT`]);
//! * the work is bounded: no more records than the image has room for;
//! * structural damage is **reported**: an `Err`, or a finding of severity Warning or worse
//!   that the undamaged image did not have. Mutations that the firmware does not care about
//!   (a bit inside variable data, a Reserved byte, a block map that still covers the volume)
//!   must instead leave the verdict alone. Mutations whose effect depends on the bytes (two
//!   bit flips may cancel in the FV checksum, a shorter name may still be NUL-terminated) are
//!   only checked for panics and bounded work.
//!
//! The Debian images come from the `ovmf` and `qemu-efi-aarch64` packages, which the test
//! script installs. The riscv64 and loongarch64 templates come from Debian 13's
//! `qemu-efi-riscv64` and `qemu-efi-loongarch64` (edk2 2025.02), which the script unpacks into
//! `target/peers/edk2-2025.02`; they are byte-identical to the blank layouts, so they stand in
//! for those bases rather than being mutated twice (each is 16 or 32 MiB, and the big images
//! dominate the run time).

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Duration;
use varstore::format::fv_header_word_sum;
use varstore::json::VariableList;
use varstore::{decode, guid, FirmwareVerdict, Layout, Severity, StoreFormat, Varstore};

/// How long one case may take before the test declares an infinite loop. Generous: debug
/// builds on a busy two-core machine parse the 64 MiB AAVMF image in well under a second.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

const DEBIAN_IMAGES: [&str; 3] = [
    "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
    "/usr/share/OVMF/OVMF_VARS.ms.fd",
    "/usr/share/AAVMF/AAVMF_VARS.ms.fd",
];

/// Debian 13's templates of the layouts that only edk2 2025.02 ships, as (layout name, path
/// under `target/peers/edk2-2025.02/usr/share`). The directory is `testkit::Stack::Current`'s
/// firmware directory; varstore does not depend on testkit, so it is spelled out here.
const DEBIAN13_TEMPLATES: [(&str, &str); 2] = [
    ("riscv64", "qemu-efi-riscv64/RISCV_VIRT_VARS.fd"),
    ("loongarch64", "qemu-efi-loongarch64/QEMU_VARS.fd"),
];

/// The Debian 13 template of `layout`, if it has one; panics, saying what installs it, if
/// the file is missing.
fn debian13_template(layout: &Layout) -> Option<(String, Vec<u8>)> {
    let (_, file) = DEBIAN13_TEMPLATES
        .iter()
        .find(|(name, _)| *name == layout.name)?;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/peers/edk2-2025.02/usr/share")
        .join(file);
    let image = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e}; run scripts/install-test-deps (scripts/test does)",
            path.display()
        )
    });
    let name = file.rsplit('/').next().unwrap();
    Some((format!("{name} (Debian 13, blank {})", layout.name), image))
}

/// splitmix64: tiny, deterministic, good enough to pick offsets and bits.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`hi > lo`).
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo) as u64) as usize
    }

    fn bit(&mut self) -> u8 {
        1 << (self.next() % 8)
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// What a mutation must do to the parse result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Structural damage: `Err`, or a new finding of severity >= Warning.
    Reported,
    /// The firmware does not care: `Ok`, same verdict, no new finding >= Warning.
    Harmless,
    /// Depends on the bytes: only no panic and bounded work.
    Any,
}

/// What one parse produced, reduced to what the assertions need.
enum Outcome {
    Err(String),
    Ok {
        verdict: FirmwareVerdict,
        /// (offset, field) of every finding with severity >= Warning.
        serious: HashSet<(u64, &'static str)>,
        /// All findings, for failure messages.
        text: Vec<String>,
        /// Whether a finding has exactly this severity (for the cases the brief pins down).
        has_error: bool,
        reclaim_free_space: bool,
    },
}

/// Parses `image` and touches everything reachable from the result.
fn exercise(image: &[u8]) -> Outcome {
    let store = match Varstore::parse(image) {
        Ok(store) => store,
        Err(err) => {
            let _ = (err.kind(), err.offset());
            return Outcome::Err(err.to_string());
        }
    };
    // Bounded work: every record takes at least a 32-byte header.
    assert!(
        store.records().len() <= image.len() / 32 + 1,
        "{} records in a {}-byte image",
        store.records().len(),
        image.len()
    );
    assert!(store.free_offset() <= store.store_end());
    assert!(store.store_end() <= image.len() as u64);
    let _ = (
        store.fv(),
        store.store(),
        store.layout(),
        store.free_space(),
    );
    let _ = (store.verdict().explain(), store.is_healthy(), store.image());
    for record in store.records() {
        let _ = (record.name(), record.state().as_str(), record.time());
        let _ = (record.attributes.flags(), record.attributes.to_string());
        if let Some(time) = record.timestamp {
            let _ = time.to_string();
        }
        let _ = decode::summary(record);
    }
    for record in store.live_variables() {
        let _ = decode::summary(record);
    }
    let list = VariableList::from_store(&store);
    serde_json::to_string(&list).expect("the variable list serialises");
    let _ = store.find("PK", None);
    if let Some(ftw) = store.ftw() {
        for write in &ftw.writes {
            let _ = write.spare_complete_without_destination();
        }
    }
    let findings = store.findings();
    Outcome::Ok {
        verdict: store.verdict(),
        serious: findings
            .iter()
            .filter(|f| f.severity >= Severity::Warning)
            .map(|f| (f.offset, f.field))
            .collect(),
        text: findings.iter().map(ToString::to_string).collect(),
        has_error: findings.iter().any(|f| f.severity == Severity::Error),
        reclaim_free_space: findings
            .iter()
            .any(|f| f.field == "free space" && f.verdict == FirmwareVerdict::ReclaimAtBoot),
    }
}

/// Extra, case-specific demands beyond [`Expect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Also {
    Nothing,
    /// `Err` or a finding of severity Error.
    ErrorSeverity,
    /// A "free space" finding with verdict ReclaimAtBoot.
    ReclaimAtBoot,
}

/// A base image, parsed once, with what the mutations need to know about it.
struct Base {
    name: String,
    image: Vec<u8>,
    baseline: Outcome,
    header_length: usize,
    store_at: usize,
    store_size: u32,
    store_end: usize,
    free_offset: usize,
    fv_length: usize,
    format: StoreFormat,
    records: Vec<RecordInfo>,
    ftw: Option<usize>,
    /// Whether the image is big enough (AAVMF: 64 MiB) that fewer random cases are run.
    big: bool,
}

#[derive(Clone)]
struct RecordInfo {
    offset: usize,
    state: u8,
    name_size: usize,
    data_size: usize,
    header_only: bool,
}

impl Base {
    fn new(name: &str, image: Vec<u8>) -> Self {
        let store = Varstore::parse(&image)
            .unwrap_or_else(|e| panic!("base image {name} does not parse: {e}"));
        let fv = store.fv();
        let info = store.store();
        let records = store
            .records()
            .iter()
            .map(|r| RecordInfo {
                offset: r.offset as usize,
                state: r.state_byte,
                name_size: r.name_raw.len(),
                data_size: r.data.len(),
                header_only: r.header_only,
            })
            .collect();
        let base = Base {
            name: name.to_string(),
            baseline: exercise(&image),
            header_length: usize::from(fv.header_length),
            store_at: info.offset as usize,
            store_size: info.size,
            store_end: store.store_end() as usize,
            free_offset: store.free_offset() as usize,
            fv_length: fv.length as usize,
            format: info.format,
            records,
            ftw: store.ftw().map(|f| f.offset as usize),
            big: image.len() > 8 << 20,
            image: Vec::new(),
        };
        drop(store);
        Base { image, ..base }
    }

    fn header_len(&self) -> usize {
        self.format.header_len()
    }

    /// Offsets of NameSize and DataSize within a record header.
    fn size_fields(&self) -> (usize, usize) {
        match self.format {
            StoreFormat::Authenticated => (0x24, 0x28),
            StoreFormat::Plain => (0x08, 0x0C),
        }
    }
}

struct Runner<'a> {
    progress: &'a mpsc::Sender<String>,
    failures: Vec<String>,
    cases: usize,
    reported: usize,
    harmless: usize,
    /// Cases offered for a big base, of which only every [`BIG_STRIDE`]th runs.
    big_offered: usize,
}

/// A debug build parses the 64 MiB AAVMF image in about 0.15 s, so only every fourth case
/// generated for it runs (deterministically; every class still gets cases).
const BIG_STRIDE: usize = 4;

impl Runner<'_> {
    /// Whether to skip this case of a big base.
    fn thin_out(&mut self, base: &Base) -> bool {
        if !base.big {
            return false;
        }
        self.big_offered += 1;
        self.big_offered % BIG_STRIDE != 1
    }

    fn check(&mut self, base: &Base, case: &str, image: &[u8], expect: Expect, also: Also) {
        if self.thin_out(base) {
            return;
        }
        self.check_always(base, case, image, expect, also);
    }

    fn check_always(&mut self, base: &Base, case: &str, image: &[u8], expect: Expect, also: Also) {
        let name = format!("{}: {case}", base.name);
        self.progress.send(name.clone()).ok();
        self.cases += 1;
        let outcome = match catch_unwind(AssertUnwindSafe(|| exercise(image))) {
            Ok(outcome) => outcome,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                self.failures.push(format!("{name}: PANIC {message}"));
                return;
            }
        };
        let base_serious = match &base.baseline {
            Outcome::Ok { serious, .. } => serious.clone(),
            Outcome::Err(_) => HashSet::new(),
        };
        let base_verdict = match &base.baseline {
            Outcome::Ok { verdict, .. } => Some(*verdict),
            Outcome::Err(_) => None,
        };
        let problem = match (&outcome, expect) {
            (_, Expect::Any) => None,
            (Outcome::Err(_), Expect::Reported) => None,
            (Outcome::Ok { serious, text, .. }, Expect::Reported) => {
                if serious.difference(&base_serious).next().is_some() {
                    None
                } else {
                    Some(format!(
                        "structural damage not reported (no error, no new warning): {text:#?}"
                    ))
                }
            }
            (Outcome::Err(e), Expect::Harmless) => Some(format!("harmless mutation rejected: {e}")),
            (
                Outcome::Ok {
                    serious,
                    text,
                    verdict,
                    ..
                },
                Expect::Harmless,
            ) => {
                if serious.difference(&base_serious).next().is_none()
                    && Some(*verdict) == base_verdict
                {
                    None
                } else {
                    Some(format!("harmless mutation reported: {text:#?}"))
                }
            }
        };
        let problem = problem.or_else(|| match (&outcome, also) {
            (_, Also::Nothing) | (Outcome::Err(_), Also::ErrorSeverity) => None,
            (
                Outcome::Ok {
                    has_error, text, ..
                },
                Also::ErrorSeverity,
            ) => (!has_error).then(|| format!("expected an error-severity finding: {text:#?}")),
            (Outcome::Err(e), Also::ReclaimAtBoot) => {
                Some(format!("expected a reclaim-at-boot finding, got error {e}"))
            }
            (
                Outcome::Ok {
                    reclaim_free_space,
                    text,
                    ..
                },
                Also::ReclaimAtBoot,
            ) => (!reclaim_free_space)
                .then(|| format!("expected a reclaim-at-boot free-space finding: {text:#?}")),
        });
        match problem {
            Some(p) => self.failures.push(format!("{name}: {p}")),
            None => match expect {
                Expect::Reported => self.reported += 1,
                Expect::Harmless => self.harmless += 1,
                Expect::Any => {}
            },
        }
    }

    /// Checks a copy of the base with `mutate` applied.
    fn mutated(
        &mut self,
        base: &Base,
        case: &str,
        expect: Expect,
        also: Also,
        mutate: impl FnOnce(&mut Vec<u8>),
    ) {
        if self.thin_out(base) {
            return;
        }
        let mut image = base.image.clone();
        mutate(&mut image);
        self.check_always(base, case, &image, expect, also);
    }
}

fn put_u16(image: &mut [u8], at: usize, v: u16) {
    image[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(image: &mut [u8], at: usize, v: u32) {
    image[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(image: &mut [u8], at: usize, v: u64) {
    image[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the FV header checksum over the first `HeaderLength` bytes (capped at 0x48..),
/// so a mutation is judged on its own and not caught by the checksum.
fn fix_fv_checksum(image: &mut [u8]) {
    let hl = usize::from(u16::from_le_bytes([image[0x30], image[0x31]]));
    let hl = if hl % 2 == 0 && (0x38..=0x1000).contains(&hl) {
        hl
    } else {
        0x48
    };
    put_u16(image, 0x32, 0);
    let sum = fv_header_word_sum(&image[..hl]);
    put_u16(image, 0x32, 0u16.wrapping_sub(sum));
}

/// A named edit of an image.
type Mutation = Box<dyn Fn(&mut Vec<u8>)>;

const VALID_STATES: [u8; 6] = [0xFF, 0x7F, 0x3F, 0x3E, 0x3D, 0x3C];

fn fv_header_cases(r: &mut Runner, base: &Base, rng: &mut Rng) {
    use Expect::*;
    let hl = base.header_length;
    // Any single bit flip in the FV header changes its word sum: checksum finding or worse.
    for byte in [0x32, 0x33] {
        for bit in 0..8 {
            r.mutated(
                base,
                &format!("FV Checksum byte 0x{byte:X} bit {bit} flipped"),
                Reported,
                Also::ErrorSeverity,
                |img| img[byte] ^= 1 << bit,
            );
        }
    }
    let singles = if base.big { 6 } else { 16 };
    for _ in 0..singles {
        let at = rng.range(0, hl);
        let bit = rng.bit();
        r.mutated(
            base,
            &format!("FV header bit 0x{bit:02X} at 0x{at:X} flipped"),
            Reported,
            Also::Nothing,
            |img| img[at] ^= bit,
        );
    }
    // Several flips may cancel in the word sum; reported whenever they do not, or when
    // HeaderLength moved the store header.
    for _ in 0..if base.big { 3 } else { 8 } {
        let mut img = base.image.clone();
        let n = rng.range(2, 5);
        for _ in 0..n {
            img[rng.range(0, hl)] ^= rng.bit();
        }
        let moved = img[0x30..0x32] != base.image[0x30..0x32];
        let expect = if fv_header_word_sum(&img[..hl]) != 0 || moved {
            Reported
        } else {
            Any
        };
        r.check(
            base,
            &format!("FV header {n} bit flips"),
            &img,
            expect,
            Also::Nothing,
        );
    }
    // Field values, with the checksum recomputed so only the field itself is judged.
    let fixed: Vec<(String, Expect, Also, Mutation)> = vec![
        (
            "FvLength 0".into(),
            Reported,
            Also::Nothing,
            Box::new(|img| put_u64(img, 0x20, 0)),
        ),
        (
            "FvLength 0xFFFFFFFFFFFFFFFF".into(),
            Reported,
            Also::ErrorSeverity,
            Box::new(|img| put_u64(img, 0x20, u64::MAX)),
        ),
        (
            "FvLength one block past the image".into(),
            Reported,
            Also::ErrorSeverity,
            Box::new(|img| {
                let len = img.len() as u64 + 0x1000;
                put_u64(img, 0x20, len)
            }),
        ),
        (
            "Revision 1".into(),
            Reported,
            Also::ErrorSeverity,
            Box::new(|img| img[0x37] = 1),
        ),
        (
            "HeaderLength 0x49 (odd)".into(),
            Reported,
            Also::Nothing,
            Box::new(|img| put_u16(img, 0x30, 0x49)),
        ),
        (
            "HeaderLength 0".into(),
            Reported,
            Also::Nothing,
            Box::new(|img| put_u16(img, 0x30, 0)),
        ),
        (
            "HeaderLength 0xFFFF".into(),
            Reported,
            Also::Nothing,
            Box::new(|img| put_u16(img, 0x30, 0xFFFF)),
        ),
        (
            "BlockMap NumBlocks 1 (covers less than FvLength)".into(),
            Reported,
            Also::ErrorSeverity,
            Box::new(|img| put_u32(img, 0x38, 1)),
        ),
        (
            "BlockMap NumBlocks 0 (entry becomes {0, len})".into(),
            Reported,
            Also::ErrorSeverity,
            Box::new(|img| put_u32(img, 0x38, 0)),
        ),
        (
            "BlockMap terminator overwritten".into(),
            Reported,
            Also::ErrorSeverity,
            Box::new(|img| put_u64(img, 0x40, 0x0000_1000_0000_0001)),
        ),
        (
            "BlockMap NumBlocks 0x4000 bit set (still covers FvLength)".into(),
            Harmless,
            Also::Nothing,
            Box::new(|img| img[0x39] |= 0x40),
        ),
        (
            "Attributes 0x00000E36 (ArmVirt's)".into(),
            Harmless,
            Also::Nothing,
            Box::new(|img| put_u32(img, 0x2C, 0xE36)),
        ),
        (
            "Attributes 0".into(),
            Harmless,
            Also::Nothing,
            Box::new(|img| put_u32(img, 0x2C, 0)),
        ),
        (
            "ZeroVector not zero".into(),
            Harmless,
            Also::Nothing,
            Box::new(|img| img[3] = 0x5A),
        ),
        (
            "Signature \"_FVX\"".into(),
            Reported,
            Also::Nothing,
            Box::new(|img| img[0x2B] = b'X'),
        ),
        (
            "FileSystemGuid byte flipped".into(),
            Reported,
            Also::Nothing,
            Box::new(|img| img[0x1F] ^= 1),
        ),
    ];
    for (case, expect, also, mutate) in fixed {
        r.mutated(
            base,
            &format!("{case}, checksum fixed"),
            expect,
            also,
            |img| {
                mutate(img);
                fix_fv_checksum(img);
            },
        );
    }
}

fn store_header_cases(r: &mut Runner, base: &Base, rng: &mut Rng) {
    use Expect::*;
    let at = base.store_at;
    for _ in 0..if base.big { 2 } else { 4 } {
        let byte = at + rng.range(0, 16);
        let bit = rng.bit();
        r.mutated(
            base,
            &format!("store Signature bit 0x{bit:02X} at 0x{byte:X} flipped"),
            Reported,
            Also::Nothing,
            |img| img[byte] ^= bit,
        );
    }
    for size in [0, 27, 0xFFFF_FFFF, 0xFFFF_FF00, 0x7FFF_FFFF] {
        r.mutated(
            base,
            &format!("store Size 0x{size:X}"),
            Reported,
            Also::Nothing,
            |img| put_u32(img, at + 0x10, size),
        );
    }
    for delta in [-4i64, 4, -0x1000] {
        let size = (i64::from(base.store_size) + delta) as u32;
        r.mutated(
            base,
            &format!("store Size 0x{size:X} ({delta:+} from the layout's)"),
            Reported,
            Also::Nothing,
            |img| put_u32(img, at + 0x10, size),
        );
    }
    for bit in 0..8 {
        r.mutated(
            base,
            &format!("store Format bit {bit} flipped"),
            Reported,
            Also::ErrorSeverity,
            |img| img[at + 0x14] ^= 1 << bit,
        );
        r.mutated(
            base,
            &format!("store State bit {bit} flipped"),
            Reported,
            Also::ErrorSeverity,
            |img| img[at + 0x15] ^= 1 << bit,
        );
    }
    // Reserved and Reserved1: no firmware checks them.
    for _ in 0..if base.big { 1 } else { 3 } {
        let byte = at + rng.range(0x16, 0x1C);
        let bit = rng.bit();
        r.mutated(
            base,
            &format!("store Reserved bit 0x{bit:02X} at 0x{byte:X} flipped"),
            Harmless,
            Also::Nothing,
            |img| img[byte] ^= bit,
        );
    }
}

fn record_cases(r: &mut Runner, base: &Base, rng: &mut Rng) {
    use Expect::*;
    let full: Vec<&RecordInfo> = base.records.iter().filter(|x| !x.header_only).collect();
    if full.is_empty() {
        return;
    }
    // The first, the last and a few in between (deleted ones included where they exist).
    let mut picks = vec![0, full.len() - 1];
    for _ in 0..if base.big { 0 } else { 2 } {
        picks.push(rng.range(0, full.len()));
    }
    picks.sort_unstable();
    picks.dedup();
    let (ns_off, ds_off) = base.size_fields();
    let hdr = base.header_len();
    for i in picks {
        let rec = full[i].clone();
        let p = rec.offset;
        let last = i == full.len() - 1;
        let tag = format!("record #{i} @0x{p:X} (state 0x{:02X})", rec.state);
        // StartId: the walk stops here, leaving the record's bytes in "free" space.
        {
            let byte = p + rng.range(0, 2);
            let bit = rng.bit();
            r.mutated(
                base,
                &format!("{tag}: StartId bit 0x{bit:02X} at 0x{byte:X} flipped"),
                Reported,
                Also::ReclaimAtBoot,
                |img| img[byte] ^= bit,
            );
        }
        for bit in 0..8 {
            let state = rec.state ^ (1 << bit);
            let expect = if VALID_STATES.contains(&state) {
                Any
            } else {
                Reported
            };
            r.mutated(
                base,
                &format!("{tag}: State -> 0x{state:02X}"),
                expect,
                Also::Nothing,
                |img| img[p + 2] = state,
            );
        }
        r.mutated(
            base,
            &format!("{tag}: State 0xFF (interrupted write)"),
            Reported,
            Also::Nothing,
            |img| img[p + 2] = 0xFF,
        );
        for (field, off) in [("NameSize", ns_off), ("DataSize", ds_off)] {
            for v in [0xFFFF_FF00u32, 0x8000_0000] {
                r.mutated(
                    base,
                    &format!("{tag}: {field} 0x{v:X}"),
                    Reported,
                    Also::ErrorSeverity,
                    |img| put_u32(img, p + off, v),
                );
            }
            r.mutated(
                base,
                &format!("{tag}: {field} 0xFFFFFFFF"),
                Reported,
                Also::Nothing,
                |img| put_u32(img, p + off, u32::MAX),
            );
        }
        r.mutated(
            base,
            &format!("{tag}: NameSize 0"),
            Reported,
            Also::Nothing,
            |img| put_u32(img, p + ns_off, 0),
        );
        // A name without its terminating NUL (only Added/transition/deleted names are checked).
        if [0x3F, 0x3E, 0x3D, 0x3C].contains(&rec.state) && rec.name_size >= 2 {
            let at = p + hdr + rec.name_size - 2 + rng.range(0, 2);
            let bit = rng.bit();
            r.mutated(
                base,
                &format!("{tag}: name terminator bit 0x{bit:02X} at 0x{at:X} set"),
                Reported,
                Also::Nothing,
                |img| img[at] ^= bit,
            );
        }
        // DataSize a header-alignment step larger runs into the next record's header.
        if !last {
            let ds = (rec.data_size + 4) as u32;
            r.mutated(
                base,
                &format!("{tag}: DataSize +4"),
                Reported,
                Also::Nothing,
                |img| put_u32(img, p + ds_off, ds),
            );
        }
        // DataSize 0: the walk lands on the data, which is not a record header.
        let data_at = p + hdr + rec.name_size;
        let data = &base.image[data_at..data_at + rec.data_size];
        let moves =
            (hdr + rec.name_size).div_ceil(4) != (hdr + rec.name_size + rec.data_size).div_ceil(4);
        if moves && data.iter().any(|&b| b != 0xFF) && !data.starts_with(&[0xAA, 0x55]) {
            r.mutated(
                base,
                &format!("{tag}: DataSize 0"),
                Reported,
                Also::Nothing,
                |img| put_u32(img, p + ds_off, 0),
            );
        }
        // Harmless: a bit inside the data, the Reserved byte.
        if rec.data_size > 0 {
            let at = data_at + rng.range(0, rec.data_size);
            let bit = rng.bit();
            r.mutated(
                base,
                &format!("{tag}: data bit 0x{bit:02X} at 0x{at:X} flipped"),
                Harmless,
                Also::Nothing,
                |img| img[at] ^= bit,
            );
        }
        r.mutated(
            base,
            &format!("{tag}: Reserved byte 0x5A"),
            Harmless,
            Also::Nothing,
            |img| img[p + 3] = 0x5A,
        );
        // Depends on the bytes: name characters, GUID, attributes, NameSize +/- 2.
        {
            let at = p + 4 + rng.range(0, hdr + rec.name_size - 4);
            let bit = rng.bit();
            r.mutated(
                base,
                &format!("{tag}: header/name bit 0x{bit:02X} at 0x{at:X} flipped"),
                Any,
                Also::Nothing,
                |img| img[at] ^= bit,
            );
        }
        for delta in [-2i64, 2] {
            let ns = (rec.name_size as i64 + delta) as u32;
            r.mutated(
                base,
                &format!("{tag}: NameSize {delta:+}"),
                Any,
                Also::Nothing,
                |img| put_u32(img, p + ns_off, ns),
            );
        }
    }
}

fn free_space_cases(r: &mut Runner, base: &Base, rng: &mut Rng) {
    let (free, end) = (base.free_offset, base.store_end);
    if free >= end {
        return;
    }
    let mut spots = vec![free, free + 1, end - 1];
    for _ in 0..if base.big { 1 } else { 3 } {
        spots.push(rng.range(free, end));
    }
    for at in spots {
        let value = rng.byte() % 0xFF; // never 0xFF
        r.mutated(
            base,
            &format!("free space byte at 0x{at:X} set to 0x{value:02X}"),
            Expect::Reported,
            Also::ReclaimAtBoot,
            |img| img[at] = value,
        );
    }
}

fn ftw_cases(r: &mut Runner, base: &Base, rng: &mut Rng) {
    use Expect::*;
    let Some(at) = base.ftw else { return };
    let reps = if base.big { 1 } else { 2 };
    for (field, lo, hi) in [
        ("Signature", 0, 16),
        ("Crc", 0x10, 0x14),
        ("state", 0x14, 0x15),
        ("Reserved3", 0x15, 0x18),
        ("WriteQueueSize", 0x18, 0x20),
    ] {
        for _ in 0..reps {
            let byte = at + rng.range(lo, hi);
            let bit = rng.bit();
            r.mutated(
                base,
                &format!("FTW {field} bit 0x{bit:02X} at 0x{byte:X} flipped"),
                Reported,
                Also::Nothing,
                |img| img[byte] ^= bit,
            );
        }
    }
    for v in [0, u64::MAX, 0x8000_0000_0000_0000] {
        r.mutated(
            base,
            &format!("FTW WriteQueueSize 0x{v:X}"),
            Reported,
            Also::Nothing,
            |img| put_u64(img, at + 0x18, v),
        );
    }
    // Regression: the firmware compares all 32 header bytes with the header it expects
    // (spec §9.1), so Reserved3 and WriteQueueSize count even when the CRC is consistent.
    r.mutated(
        base,
        "FTW Reserved3 00 00 00",
        Reported,
        Also::Nothing,
        |img| img[at + 0x15..at + 0x18].fill(0),
    );
    r.mutated(
        base,
        "FTW WriteQueueSize halved, Crc recomputed",
        Reported,
        Also::Nothing,
        |img| {
            let size = u64::from_le_bytes(img[at + 0x18..at + 0x20].try_into().unwrap());
            put_u64(img, at + 0x18, size / 2);
            let mut header = img[at..at + 32].to_vec();
            header[0x10..0x18].fill(0xFF);
            put_u32(img, at + 0x10, crc32fast::hash(&header));
        },
    );
    let queue = at + 32;
    if base.image[queue] == 0xFF {
        // HeaderAllocated set on an erased queue: NumberOfWrites reads all-ones.
        r.mutated(
            base,
            "FTW write queue: HeaderAllocated set on an erased header",
            Reported,
            Also::Nothing,
            |img| img[queue] = 0xFE,
        );
    }
    for _ in 0..reps {
        let byte = queue + rng.range(0, 200);
        let value = rng.byte();
        r.mutated(
            base,
            &format!("FTW write queue byte 0x{byte:X} = 0x{value:02X}"),
            Any,
            Also::Nothing,
            |img| img[byte] = value,
        );
    }
}

fn truncation_cases(r: &mut Runner, base: &Base, rng: &mut Rng) {
    let mut lens = vec![
        0,
        1,
        0x38,
        0x47,
        0x48,
        0x63,
        0x64,
        base.free_offset,
        base.store_end - 1,
        base.store_end,
        base.fv_length - 1,
    ];
    if let Some(ftw) = base.ftw {
        lens.extend([ftw + 16, ftw + 32, ftw + 0x40]);
    }
    for _ in 0..if base.big { 2 } else { 6 } {
        lens.push(rng.range(0, base.fv_length));
    }
    for len in lens {
        r.check(
            base,
            &format!(
                "truncated to 0x{len:X} bytes (FvLength 0x{:X})",
                base.fv_length
            ),
            &base.image[..len],
            Expect::Reported,
            Also::Nothing,
        );
    }
    if base.image.len() > base.fv_length {
        // AAVMF: the zero padding after the volume is not part of it.
        r.check(
            base,
            "truncated to FvLength (padding removed)",
            &base.image[..base.fv_length],
            Expect::Harmless,
            Also::Nothing,
        );
    }
    let mut longer = base.image.clone();
    longer.extend_from_slice(b"trailing garbage");
    r.check(
        base,
        "trailing garbage appended",
        &longer,
        Expect::Any,
        Also::Nothing,
    );
}

fn random_cases(r: &mut Runner, base: &Base, rng: &mut Rng) {
    let n = if base.big { 3 } else { 15 };
    let span = base.fv_length.min(base.image.len());
    for _ in 0..n {
        let mut img = base.image.clone();
        let flips = rng.range(1, 9);
        for _ in 0..flips {
            // Bias towards the headers, where the parser makes decisions.
            let at = if rng.next() % 2 == 0 {
                rng.range(0, base.free_offset.max(0x100).min(span))
            } else {
                rng.range(0, span)
            };
            img[at] ^= rng.bit();
        }
        r.check(
            base,
            &format!("{flips} random bit flips"),
            &img,
            Expect::Any,
            Also::Nothing,
        );
    }
    for _ in 0..n / 2 {
        let mut img = base.image.clone();
        let at = rng.range(0, span - 64);
        let len = rng.range(1, 64);
        for b in &mut img[at..at + len] {
            *b = rng.byte();
        }
        r.check(
            base,
            &format!("{len} random bytes at 0x{at:X}"),
            &img,
            Expect::Any,
            Also::Nothing,
        );
    }
    for _ in 0..n / 3 {
        let mut img = base.image.clone();
        let at = rng.range(0, 0x100);
        let v = [0u32, u32::MAX, 0x8000_0000, 0x7FFF_FFFF, 0xFFFF_FF00][rng.range(0, 5)];
        put_u32(&mut img, at & !3, v);
        r.check(
            base,
            &format!("u32 0x{v:X} written at 0x{:X}", at & !3),
            &img,
            Expect::Any,
            Also::Nothing,
        );
    }
}

/// Images that are not a store at all.
fn garbage_cases(r: &mut Runner, base: &Base, rng: &mut Rng) {
    for len in [0usize, 1, 2, 0x48, 0x64, 0x1000, 0x84000] {
        for fill in [0x00u8, 0xFF] {
            r.check(
                base,
                &format!("all 0x{fill:02X}, {len} bytes"),
                &vec![fill; len],
                Expect::Reported,
                Also::Nothing,
            );
        }
    }
    for len in [3usize, 0x47, 0x48, 0x64, 0x100, 0x1000, 0x20000] {
        let img: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        r.check(
            base,
            &format!("{len} random bytes"),
            &img,
            Expect::Reported,
            Also::Nothing,
        );
    }
    // A valid FV header and store header followed by random bytes.
    for _ in 0..4 {
        let mut img = Layout::by_name("ovmf-2m").unwrap().create();
        for b in &mut img[0x64..] {
            *b = rng.byte();
        }
        r.check(
            base,
            "blank ovmf-2m headers, random body",
            &img,
            Expect::Any,
            Also::Nothing,
        );
    }
    // Records one after another with random sizes.
    for _ in 0..4 {
        let mut img = Layout::by_name("ovmf-2m").unwrap().create();
        let mut p = 0x64;
        while p + 60 < 0xE000 {
            img[p..p + 2].copy_from_slice(&[0xAA, 0x55]);
            img[p + 2] = VALID_STATES[rng.range(0, VALID_STATES.len())];
            put_u32(&mut img, p + 0x24, rng.range(0, 40) as u32);
            put_u32(&mut img, p + 0x28, rng.range(0, 40) as u32);
            p += 60 + rng.range(0, 80);
            p &= !3;
        }
        r.check(
            base,
            "random record chain",
            &img,
            Expect::Any,
            Also::Nothing,
        );
    }
}

/// Appends one record (auth or plain header) at `p`, returns the next aligned offset.
fn put_record(
    img: &mut [u8],
    p: usize,
    format: StoreFormat,
    state: u8,
    name: &str,
    data: &[u8],
) -> usize {
    let name: Vec<u8> = name
        .encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect();
    let (hdr, ns_off) = match format {
        StoreFormat::Authenticated => (60, 0x24),
        StoreFormat::Plain => (32, 0x08),
    };
    img[p..p + hdr].fill(0);
    img[p..p + 2].copy_from_slice(&[0xAA, 0x55]);
    img[p + 2] = state;
    put_u32(img, p + 4, 7);
    put_u32(img, p + ns_off, name.len() as u32);
    put_u32(img, p + ns_off + 4, data.len() as u32);
    img[p + ns_off + 8..p + ns_off + 24].copy_from_slice(&guid::EFI_GLOBAL_VARIABLE.to_bytes());
    img[p + hdr..p + hdr + name.len()].copy_from_slice(&name);
    let d = p + hdr + name.len();
    img[d..d + data.len()].copy_from_slice(data);
    (d + data.len()).div_ceil(4) * 4
}

/// A plain-format (gEfiVariableGuid) store with a replaced, a deleted and live records.
fn plain_store() -> Vec<u8> {
    let mut img = Layout::by_name("ovmf-2m").unwrap().create();
    img[0x48..0x58].copy_from_slice(&guid::VARIABLE_STORE.to_bytes());
    let f = StoreFormat::Plain;
    let mut p = 0x64;
    p = put_record(&mut img, p, f, 0x3C, "Timeout", &[5, 0]);
    p = put_record(&mut img, p, f, 0x3F, "Timeout", &[0, 0]);
    p = put_record(&mut img, p, f, 0x3D, "Boot0000", &[1, 0, 0, 0, 0x10, 0]);
    p = put_record(&mut img, p, f, 0x3F, "BootOrder", &[0, 0, 1, 0]);
    put_record(&mut img, p, f, 0x3F, "Lang", b"eng\0");
    img
}

/// A loongarch64 store (16 MiB, the smallest of the shared ArmVirt-style volume) with a
/// replaced and live records, so record mutations also run on a layout padded with zeros.
fn loongarch64_store() -> Vec<u8> {
    let mut img = Layout::by_name("loongarch64").unwrap().create();
    let f = StoreFormat::Authenticated;
    let mut p = 0x64;
    p = put_record(&mut img, p, f, 0x3C, "Timeout", &[5, 0]);
    p = put_record(&mut img, p, f, 0x3F, "Timeout", &[0, 0]);
    p = put_record(&mut img, p, f, 0x3F, "BootOrder", &[0, 0]);
    put_record(&mut img, p, f, 0x3F, "Lang", b"eng\0");
    img
}

/// A blank ovmf-2m store with one variable and a write that reached the spare area but not
/// its destination (spec §9.2, §9.4): verdict restart-ftw-write.
fn pending_ftw_store() -> Vec<u8> {
    let layout = Layout::by_name("ovmf-2m").unwrap();
    let mut img = layout.create();
    put_record(
        &mut img,
        0x64,
        StoreFormat::Authenticated,
        0x3F,
        "Timeout",
        &[0, 0],
    );
    let q = layout.ftw_working_offset() as usize + 32;
    img[q] = 0xFC; // HeaderAllocated, WritesAllocated, not Complete
    img[q + 4..q + 20].copy_from_slice(
        &guid::parse("fe5cea76-4f72-49e8-986f-2cd899dffe5d")
            .unwrap()
            .to_bytes(),
    );
    put_u64(&mut img, q + 24, 1);
    put_u64(&mut img, q + 32, 0);
    let rec = q + 40;
    img[rec] = 0xFD; // SpareComplete, not DestinationComplete
    put_u64(&mut img, rec + 8, 0);
    put_u64(&mut img, rec + 16, 0x48);
    put_u64(&mut img, rec + 24, 0xDFB8);
    put_u64(&mut img, rec + 32, (-0x10000i64) as u64);
    img
}

fn pending_ftw_cases(r: &mut Runner, base: &Base) {
    use Expect::*;
    let q = base.ftw.expect("ovmf-2m has a working block") + 32;
    for (case, expect, mutate) in [
        (
            "NumberOfWrites 0",
            Reported,
            Box::new(move |img: &mut Vec<u8>| put_u64(img, q + 24, 0)) as Mutation,
        ),
        (
            "NumberOfWrites 0xFFFFFFFFFFFFFFFF",
            Reported,
            Box::new(move |img: &mut Vec<u8>| put_u64(img, q + 24, u64::MAX)),
        ),
        (
            "NumberOfWrites 0x1000000",
            Reported,
            Box::new(move |img: &mut Vec<u8>| put_u64(img, q + 24, 0x100_0000)),
        ),
        (
            "PrivateDataSize 0xFFFFFFFFFFFFFFFF",
            Reported,
            Box::new(move |img: &mut Vec<u8>| put_u64(img, q + 32, u64::MAX)),
        ),
        (
            "PrivateDataSize 0x7FFFFFFFFFFFFFFF",
            Reported,
            Box::new(move |img: &mut Vec<u8>| put_u64(img, q + 32, i64::MAX as u64)),
        ),
        (
            "write finished (header 0xF8, record 0xF9)",
            Any,
            Box::new(move |img: &mut Vec<u8>| {
                img[q] = 0xF8;
                img[q + 40] = 0xF9;
            }),
        ),
        (
            "second header allocated after the first",
            Any,
            Box::new(move |img: &mut Vec<u8>| img[q + 80] = 0xFE),
        ),
    ] {
        r.mutated(
            base,
            &format!("FTW pending write: {case}"),
            expect,
            Also::Nothing,
            mutate,
        );
    }
}

fn run_all(progress: &mpsc::Sender<String>) -> (Vec<String>, usize, usize, usize) {
    let mut bases = Vec::new();
    let missing: Vec<&str> = DEBIAN_IMAGES
        .iter()
        .copied()
        .filter(|p| !std::path::Path::new(p).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "Debian firmware images missing: {missing:?}. Install them with \
         `apt-get install ovmf qemu-efi-aarch64` (the test script does this)."
    );
    for path in DEBIAN_IMAGES {
        let image = std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        bases.push((path.rsplit('/').next().unwrap().to_string(), image));
    }
    for layout in varstore::LAYOUTS {
        let blank = layout.create();
        match debian13_template(layout) {
            Some((name, template)) => {
                assert!(
                    template == blank,
                    "{name} differs from the blank {} layout",
                    layout.name
                );
                bases.push((name, template));
            }
            None => bases.push((format!("blank {}", layout.name), blank)),
        }
    }
    bases.push(("plain-format store".into(), plain_store()));
    bases.push((
        "loongarch64 store with variables".into(),
        loongarch64_store(),
    ));
    bases.push(("pending FTW write".into(), pending_ftw_store()));

    let mut runner = Runner {
        progress,
        failures: Vec::new(),
        cases: 0,
        reported: 0,
        harmless: 0,
        big_offered: 0,
    };
    for (seed, (name, image)) in bases.into_iter().enumerate() {
        let started = std::time::Instant::now();
        let before = runner.cases;
        let base = Base::new(&name, image);
        let mut rng = Rng(0x5EED_0000 + seed as u64);
        fv_header_cases(&mut runner, &base, &mut rng);
        store_header_cases(&mut runner, &base, &mut rng);
        record_cases(&mut runner, &base, &mut rng);
        free_space_cases(&mut runner, &base, &mut rng);
        ftw_cases(&mut runner, &base, &mut rng);
        truncation_cases(&mut runner, &base, &mut rng);
        random_cases(&mut runner, &base, &mut rng);
        if seed == 0 {
            garbage_cases(&mut runner, &base, &mut rng);
        }
        if name == "pending FTW write" {
            pending_ftw_cases(&mut runner, &base);
        }
        eprintln!(
            "{name}: {} cases in {:.1?}",
            runner.cases - before,
            started.elapsed()
        );
    }
    (
        runner.failures,
        runner.cases,
        runner.reported,
        runner.harmless,
    )
}

#[test]
fn mutated_images_never_panic_and_damage_is_reported() {
    let (progress, events) = mpsc::channel::<String>();
    let (done_tx, done_rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let result = run_all(&progress);
        done_tx.send(result).ok();
    });
    let mut current = String::from("(loading base images)");
    let (failures, cases, reported, harmless) = loop {
        match done_rx.try_recv() {
            Ok(result) => break result,
            Err(mpsc::TryRecvError::Disconnected) => {
                // The worker panicked outside a case (e.g. a missing image): show why.
                match worker.join() {
                    Err(panic) => std::panic::resume_unwind(panic),
                    Ok(()) => unreachable!("worker ended without a result"),
                }
            }
            Err(mpsc::TryRecvError::Empty) => {}
        }
        match events.recv_timeout(CASE_TIMEOUT) {
            Ok(name) => current = name,
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if done_rx.try_recv().is_err() {
                    panic!(
                        "case did not return within {CASE_TIMEOUT:?} (unbounded work?): {current}"
                    );
                }
            }
        }
    };
    worker.join().ok();
    eprintln!("{cases} mutated images: {reported} damage cases reported, {harmless} harmless cases accepted");
    assert!(cases >= 300, "only {cases} cases ran");
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
