//! Unit tests of the device: reads, queries, state, memory and bus details.

use super::*;
use crate::compat::Compat;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Change(Range<usize>),
    Flush,
}

#[derive(Debug, Default)]
struct Rec {
    calls: Vec<Call>,
    fail: bool,
}

impl Storage for Rec {
    fn record_change(&mut self, _: &[u8], range: Range<usize>) -> Result<(), StorageError> {
        self.calls.push(Call::Change(range));
        self.result()
    }
    fn flush_point(&mut self, _: &[u8]) -> Result<(), StorageError> {
        self.calls.push(Call::Flush);
        self.result()
    }
}

impl Rec {
    fn result(&self) -> Result<(), StorageError> {
        if self.fail {
            Err(StorageError {
                context: "test".into(),
                source: std::io::Error::other("disk full"),
            })
        } else {
            Ok(())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Array(bool),
    Invalid(u64, u8),
    ProgramError(u64),
    Erased(u64, u64),
    StorageError,
}

#[derive(Debug, Default)]
struct Evs(Vec<Ev>);

impl PflashEvents for Evs {
    fn array_mode_changed(&mut self, array_mode: bool) {
        self.0.push(Ev::Array(array_mode));
    }
    fn invalid_command(&mut self, offset: u64, command: u8) {
        self.0.push(Ev::Invalid(offset, command));
    }
    fn program_error(&mut self, offset: u64) {
        self.0.push(Ev::ProgramError(offset));
    }
    fn erased(&mut self, offset: u64, len: u64) {
        self.0.push(Ev::Erased(offset, len));
    }
    fn storage_error(&mut self, _: &StorageError) {
        self.0.push(Ev::StorageError);
    }
}

type Dev = Pflash<Vec<u8>, Rec, Evs>;

const VARS: usize = 0x84000;

/// Content where every byte differs from its neighbours and from 0xff.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// The q35 vars flash, behaving like QEMU 10.0.
fn q35() -> Dev {
    q35_compat(Compat::Qemu10_0)
}

fn q35_compat(compat: Compat) -> Dev {
    let mut content = pattern(VARS);
    content[0x28..0x2c].copy_from_slice(b"_FVH");
    content[0x20..0x28].copy_from_slice(&0x84000u64.to_le_bytes());
    Pflash::new(
        Geometry::q35(VARS as u64).unwrap().with_compat(compat),
        content,
        Rec::default(),
        Evs::default(),
    )
    .unwrap()
}

fn virt() -> Dev {
    let g = Geometry::arm_virt();
    let content = vec![0xff; g.size() as usize];
    Pflash::new(g, content, Rec::default(), Evs::default()).unwrap()
}

fn rd(d: &mut Dev, offset: u64, size: usize) -> u64 {
    let mut b = [0u8; 8];
    d.read(offset, &mut b[..size]);
    u64::from_le_bytes(b)
}

fn wr(d: &mut Dev, offset: u64, size: usize, value: u64) {
    d.write(offset, &value.to_le_bytes()[..size]);
}

fn wb(d: &mut Dev, offset: u64, value: u8) {
    d.write(offset, &[value]);
}

#[test]
fn array_mode_reads_memory() {
    let mut d = q35();
    assert!(d.is_array_mode());
    assert_eq!(rd(&mut d, 0x28, 4), 0x4856_465f);
    assert_eq!(rd(&mut d, 0x20, 8), 0x84000);
    assert_eq!(rd(&mut d, 0x21, 2), 0x0840);
}

#[test]
fn legacy_id_reads() {
    let mut d = q35();
    wb(&mut d, 0x1234, 0x90);
    assert!(!d.is_array_mode());
    for (off, size) in [(0, 1), (1, 1), (2, 1), (3, 1), (0, 2), (0, 4), (0x1000, 1)] {
        assert_eq!(rd(&mut d, off, size), 0, "{off:#x}/{size}");
    }
    wb(&mut d, 0, 0xff);
    assert!(d.is_array_mode());
    assert_eq!(rd(&mut d, 0x28, 4), 0x4856_465f);

    // With ids: +0 gives id0<<8|id1, +1 gives id2<<8|id3, address masked with 0xff.
    let mut g = Geometry::q35(4096).unwrap();
    g.id = [0x89, 0x18, 0x12, 0x34];
    let mut d: Dev = Pflash::new(g, vec![0; 4096], Rec::default(), Evs::default()).unwrap();
    wb(&mut d, 0, 0x90);
    assert_eq!(rd(&mut d, 0, 1), 0x18);
    assert_eq!(rd(&mut d, 0, 2), 0x8918);
    assert_eq!(rd(&mut d, 0, 4), 0x8918);
    assert_eq!(rd(&mut d, 1, 2), 0x1234);
    assert_eq!(rd(&mut d, 2, 2), 0);
    assert_eq!(rd(&mut d, 0x100, 2), 0x8918);
    assert_eq!(rd(&mut d, 0x201, 2), 0x1234);
}

#[test]
fn arm_virt_id_reads() {
    let mut d = virt();
    wr(&mut d, 0, 4, 0x0090_0090);
    assert_eq!(rd(&mut d, 0, 4), 0x0089_0089);
    assert_eq!(rd(&mut d, 4, 4), 0x0018_0018);
    assert_eq!(rd(&mut d, 8, 4), 0); // lock status is not emulated
    assert_eq!(rd(&mut d, 0, 2), 0x0089);
    assert_eq!(rd(&mut d, 0, 1), 0x89);
    // Upper address bits select blocks: masked away.
    assert_eq!(rd(&mut d, 0x40000, 4), 0x0089_0089);
    // 8 bytes: +0 then +4.
    assert_eq!(rd(&mut d, 0, 8), 0x0018_0018_0089_0089);
}

#[test]
fn legacy_cfi_query() {
    let mut d = q35();
    wb(&mut d, 0x5555, 0x98);
    let mut table = [0u8; 0x52];
    for (i, b) in table.iter_mut().enumerate() {
        *b = rd(&mut d, i as u64, 1) as u8;
    }
    let head: [u8; 0x36] = [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x51, 0x52, 0x59, 0x01, 0x00, 0x31, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x45, 0x55, 0x00, 0x00, 0x07, 0x07, 0x0a, 0x00, 0x04, 0x04, 0x04,
        0x00, 0x0e, 0x02, 0x00, 0x08, 0x00, 0x01, 0x83, 0x00, 0x10, 0x00, 0x50, 0x52, 0x49, 0x31,
        0x30,
    ];
    assert_eq!(&table[..0x36], &head[..]);
    assert_eq!(table[0x3f], 1);
    assert!(table[0x36..0x3f].iter().all(|&b| b == 0));
    assert!(table[0x40..].iter().all(|&b| b == 0));
    assert_eq!(rd(&mut d, 0x52, 1), 0);
    assert_eq!(rd(&mut d, 0xff, 1), 0);
    assert_eq!(rd(&mut d, 0x110, 1), 0x51); // masked with 0xff
    assert_eq!(rd(&mut d, 0x10, 2), 0x51); // one byte, zero-extended
    assert_eq!(rd(&mut d, 0x10, 4), 0x51);
    // Other writes, 0x70 included, keep the device in query mode.
    wb(&mut d, 0, 0x70);
    assert_eq!(rd(&mut d, 0x10, 1), 0x51);
    wb(&mut d, 0, 0x10);
    assert_eq!(rd(&mut d, 0x11, 1), 0x52);
    wb(&mut d, 0, 0xff);
    assert!(d.is_array_mode());
    assert!(d.events().0.iter().all(|e| !matches!(e, Ev::Invalid(..))));
}

#[test]
fn legacy_cfi_scaled_by_bank_width() {
    let mut g = Geometry::q35(4096).unwrap();
    g.bank_width = 4;
    let mut d: Dev = Pflash::new(g, vec![0; 4096], Rec::default(), Evs::default()).unwrap();
    wr(&mut d, 0, 4, 0x98);
    assert_eq!(rd(&mut d, 0x40, 4), 0x51);
    assert_eq!(rd(&mut d, 0x44, 4), 0x52);
    // Table 0x2A is 0x0b for a wide bank.
    assert_eq!(rd(&mut d, 0x2a * 4, 4), 0x0b);
}

#[test]
fn arm_virt_cfi_query() {
    let mut d = virt();
    wr(&mut d, 0x55 * 4, 4, 0x0098_0098);
    assert_eq!(rd(&mut d, 0x10 * 4, 4), 0x0051_0051);
    assert_eq!(rd(&mut d, 0x11 * 4, 4), 0x0052_0052);
    assert_eq!(rd(&mut d, 0x10 * 4, 2), 0x0051);
    assert_eq!(rd(&mut d, 0x27 * 4, 4), 0x0019_0019);
    assert_eq!(rd(&mut d, 0x2a * 4, 4), 0x000b_000b);
    assert_eq!(rd(&mut d, 0x2d * 4, 4), 0x00ff_00ff);
    assert_eq!(rd(&mut d, 0x30 * 4, 4), 0x0002_0002);
    assert_eq!(rd(&mut d, 0x52 * 4, 4), 0);
    // No 0xff masking without legacy mode.
    assert_eq!(rd(&mut d, 0x400 + 0x10 * 4, 4), 0);
    assert_eq!(rd(&mut d, 0x10 * 4, 8), 0x0052_0052_0051_0051);
    wr(&mut d, 0, 4, 0x00ff_00ff);
    assert!(d.is_array_mode());
}

#[test]
fn status_reads_replicate() {
    let mut d = q35();
    wb(&mut d, 0x10, 0x70);
    assert_eq!(rd(&mut d, 0x10, 1), 0x80);
    assert_eq!(rd(&mut d, 0x77, 2), 0x80);
    assert_eq!(rd(&mut d, 0x4000, 4), 0x0080_0080);
    assert_eq!(rd(&mut d, 0, 8), 0x0080_0080_0080_0080);

    let mut d = virt();
    wr(&mut d, 0, 4, 0x0070_0070);
    assert_eq!(rd(&mut d, 0, 1), 0x80);
    assert_eq!(rd(&mut d, 0, 2), 0x0080);
    assert_eq!(rd(&mut d, 0, 4), 0x0080_0080);

    // Non-legacy 1-byte chips in a 4-byte bank: one status per byte.
    let mut g = Geometry::arm_virt();
    g.device_width = 1;
    g.num_blocks = 1;
    let mut d: Dev = Pflash::new(g, vec![0; 256 * 1024], Rec::default(), Evs::default()).unwrap();
    wb(&mut d, 0, 0x70);
    assert_eq!(rd(&mut d, 0, 2), 0x8080);
    assert_eq!(rd(&mut d, 0, 4), 0x8080_8080);
}

#[test]
fn clear_status_returns_to_array_with_zero_status() {
    let mut d = q35();
    // OVMF's probe.
    wb(&mut d, 0x10, 0x50);
    assert!(d.is_array_mode());
    assert_eq!(rd(&mut d, 0x10, 1), u64::from(d.memory()[0x10]));
    wb(&mut d, 0x10, 0x70);
    assert_eq!(rd(&mut d, 0x10, 1), 0);
    wb(&mut d, 0x10, 0xff);
    assert_eq!(d.state().status, 0);
    assert_eq!(d.events().0, [Ev::Array(false), Ev::Array(true)]);
}

#[test]
fn reset_returns_to_array_and_drops_the_buffer() {
    let mut d = q35();
    wb(&mut d, 0, 0x90);
    d.reset();
    assert!(d.is_array_mode());
    assert_eq!(d.state(), PflashState::default());
    wb(&mut d, 0x100, 0xe8);
    wb(&mut d, 0x100, 1);
    wb(&mut d, 0x100, 0x11); // QEMU 10.0 opens the buffer at the first data cycle
    assert!(d.state().write_buffer.is_some());
    d.reset();
    assert_eq!(d.state(), PflashState::default());
    // Reset in array mode is no transition.
    let n = d.events().0.len();
    d.reset();
    assert_eq!(d.events().0.len(), n);
}

#[test]
fn eight_byte_accesses_are_two_halves() {
    let mut d = q35();
    let orig = d.memory().to_vec();
    wb(&mut d, 0x100, 0x10);
    wr(&mut d, 0x100, 8, 0x0000_00ff_1122_3344);
    assert_eq!(&d.memory()[0x100..0x104], &[0x44, 0x33, 0x22, 0x11]);
    assert_eq!(&d.memory()[0x104..0x108], &orig[0x104..0x108]);
    assert!(d.is_array_mode()); // the high half was the 0xff command
    assert_eq!(
        rd(&mut d, 0x100, 8),
        u64::from_le_bytes(d.memory()[0x100..0x108].try_into().unwrap())
    );
}

#[test]
fn state_round_trip_mid_buffered_write() {
    let run = |split: bool| {
        let mut d = q35();
        wb(&mut d, 0x100, 0xe8);
        wb(&mut d, 0x100, 2);
        wb(&mut d, 0x110, 0x01);
        if split {
            let st = d.state();
            assert_eq!(st.write_buffer.as_ref().unwrap().offset, 0x100);
            assert_eq!(st.write_buffer.as_ref().unwrap().written, 0x110..0x111);
            let (content, storage, events) = d.into_parts();
            d = Pflash::from_state(
                Geometry::q35(VARS as u64).unwrap(),
                content,
                &st,
                storage,
                events,
            )
            .unwrap();
            assert_eq!(d.state(), st);
        }
        wb(&mut d, 0x111, 0x02);
        wb(&mut d, 0x112, 0x03);
        wb(&mut d, 0x100, 0xd0);
        wb(&mut d, 0x100, 0xff);
        let (content, storage, _) = d.into_parts();
        (content, storage.calls)
    };
    assert_eq!(run(true), run(false));
}

#[test]
fn from_state_rejects_bad_buffers() {
    let g = Geometry::q35(4096).unwrap();
    let mut st = PflashState {
        wcycle: 2,
        cmd: 0xe8,
        write_buffer: Some(WriteBuffer {
            offset: 0x100,
            bytes: vec![0; 255],
            written: 0..0,
        }),
        ..PflashState::default()
    };
    let new = |st: &PflashState| {
        Pflash::<Vec<u8>, NoStorage, NoEvents>::from_state(
            g.clone(),
            vec![0; 4096],
            st,
            NoStorage,
            NoEvents,
        )
    };
    assert!(matches!(new(&st), Err(GeometryError::State(_))));
    st.write_buffer.as_mut().unwrap().bytes = vec![0; 256];
    assert!(new(&st).is_ok());
    st.write_buffer.as_mut().unwrap().offset = 0x180;
    assert!(matches!(new(&st), Err(GeometryError::State(_))));
    st.write_buffer.as_mut().unwrap().offset = 0x100;
    st.write_buffer.as_mut().unwrap().written = 0x100..0x201;
    assert!(matches!(new(&st), Err(GeometryError::State(_))));
    assert!(matches!(
        Pflash::<Vec<u8>, NoStorage, NoEvents>::new(g.clone(), vec![0; 10], NoStorage, NoEvents),
        Err(GeometryError::ContentLength {
            expected: 4096,
            got: 10
        })
    ));
}

#[test]
fn caller_memory_is_used_in_place() {
    // A VMM's mapping stands in as a slice of a larger buffer: the device must change
    // those very bytes, and only inside its window.
    let mut mapping = vec![0x5au8; 3 * 4096];
    {
        let window = &mut mapping[4096..2 * 4096];
        let mut d: Pflash<&mut [u8]> =
            Pflash::new(Geometry::q35(4096).unwrap(), window, NoStorage, NoEvents).unwrap();
        d.write(0x20, &[0x20]);
        d.write(0x20, &[0xd0]);
        d.write(0x10, &[0x10]);
        d.write(0x10, &[0xa5]);
        d.write(0, &[0xff]);
        assert_eq!(d.memory()[0x10], 0xa5);
    }
    assert_eq!(mapping[4096 + 0x10], 0xa5);
    assert_eq!(mapping[4096 + 0x11], 0xff);
    assert!(mapping[..4096].iter().all(|&b| b == 0x5a));
    assert!(mapping[2 * 4096..].iter().all(|&b| b == 0x5a));
}

#[test]
fn big_endian_bus() {
    let mut g = Geometry::q35(4096).unwrap();
    g.big_endian = true;
    g.bank_width = 2;
    g.id = [0x89, 0x18, 0, 0];
    let mut d: Dev = Pflash::new(g, vec![0; 4096], Rec::default(), Evs::default()).unwrap();
    d.write(0, &[0x00, 0x70]);
    let mut b = [0u8; 4];
    d.read(0, &mut b);
    assert_eq!(b, [0x00, 0x80, 0x00, 0x80]);
    d.write(0, &[0x00, 0x90]);
    let mut b = [0u8; 2];
    d.read(0, &mut b);
    assert_eq!(b, [0x89, 0x18]);
    d.write(0, &[0x00, 0x10]);
    d.write(0x10, &[0xaa, 0xbb]);
    d.write(0, &[0x00, 0xff]);
    assert_eq!(&d.memory()[0x10..0x12], &[0xaa, 0xbb]);
    d.write(0, &[0x00, 0x70]);
    d.write(0, &[0x00, 0x00, 0x00, 0xff]);
    assert!(d.is_array_mode());
}

#[test]
fn out_of_range_and_odd_sizes_are_ignored() {
    let mut d = q35();
    let orig = d.memory().to_vec();
    let mut b = [0xeeu8; 4];
    d.read(VARS as u64 - 2, &mut b);
    assert_eq!(b, [0; 4]);
    d.read(u64::MAX, &mut b);
    d.write(VARS as u64 - 1, &[0x10, 0x10]);
    d.write(u64::MAX - 1, &[0x10, 0x10]);
    let mut b3 = [0xeeu8; 3];
    d.write(0, &[0x70, 0, 0]);
    d.read(0, &mut b3);
    assert!(d.is_array_mode());
    assert_eq!(d.memory(), &orig[..]);
    wb(&mut d, 0, 0x70);
    d.read(0, &mut b3);
    assert_eq!(b3, [0; 3]);
}

mod commands;
