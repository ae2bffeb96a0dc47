//! The guest's code, assembled with iced-x86's `code_asm`: the last 64 KiB of the image.
//!
//! ```text
//! 0xFFFF_0000  32-bit code and its strings
//! 0xFFFF_C000  strings
//! 0xFFFF_FE00  GDT: null, flat 4 GiB code (0x08), flat 4 GiB data (0x10); GDTR at +0x20
//! 0xFFFF_FF00  16-bit stub: lgdt, CR0.PE, far jump to 0x08:0xFFFF_0000
//! 0xFFFF_FFF0  reset vector: jump to the stub
//! ```
//!
//! The code uses integer instructions only (any x87 instruction ends the run with a KVM
//! internal error on these hosts) and plain `mov` for every flash access, so that each
//! access is one MMIO exit of the access's width.

use iced_x86::code_asm::*;
use iced_x86::{Code, IcedError, Instruction, MemoryOperand, Register};

use super::GuestError;
use crate::layout::STACK_TOP;

/// Size of the code region at the top of the image.
pub const CODE_REGION: u64 = 0x1_0000;

/// Guest address of the 32-bit code (CS base 0 after the far jump).
const CODE32: u32 = 0xffff_0000;
/// Offsets in the code region (equal to the real-mode IP, CS base being 0xFFFF_0000).
const STRINGS: u16 = 0xc000;
const GDT: u16 = 0xfe00;
const GDTR: u16 = 0xfe20;
const STUB16: u16 = 0xff00;
const RESET: u16 = 0xfff0;

/// COM1's data and line status registers; THRE (bit 5) says it takes a byte.
const COM1: u16 = 0x3f8;
const COM1_LSR: u16 = 0x3fd;
const LSR_THRE: u32 = 0x20;
/// QEMU's `isa-debug-exit,iobase=0xf4`.
const DEBUG_EXIT: u16 = 0xf4;
/// Mismatches reported in detail on COM1; the rest are only counted.
const MISMATCHES_SHOWN: u32 = 8;

/// What the code needs to know about its image and workload.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    /// Workload name, printed.
    pub name: &'a str,
    /// Guest address of the operation table.
    pub table: u32,
    /// Number of operations (printed; the table ends with an end entry).
    pub ops: u32,
    /// Guest address of the vars flash.
    pub vars_base: u32,
    /// Its size.
    pub vars_len: u32,
    /// Expected checksum of the vars content before the workload.
    pub initial_checksum: u32,
    /// Expected checksum after it.
    pub final_checksum: u32,
}

/// The 64 KiB code region for `params`.
///
/// # Errors
///
/// Only if the program outgrows its part of the region (a bug).
pub fn assemble(params: &Params) -> Result<Vec<u8>, GuestError> {
    let asm_error = |e: IcedError| GuestError::Asm(e.to_string());
    let (mut region, strings) = code32(params).map_err(asm_error)?;
    if region.len() > usize::from(STRINGS) || strings.len() > usize::from(GDT - STRINGS) {
        return Err(GuestError::Asm(format!(
            "32-bit code ({:#x} bytes) or strings ({:#x} bytes) outgrow their part of the region",
            region.len(),
            strings.len()
        )));
    }
    region.resize(usize::from(STRINGS), 0xcc);
    region.extend_from_slice(&strings);
    region.resize(usize::from(GDT), 0xcc);
    // The accessed bit is preset (0x9B, 0x93): the CPU would otherwise set it when loading a
    // segment, a write to the read-only flash that KVM cannot complete.
    for descriptor in [0u64, 0x00cf_9b00_0000_ffff, 0x00cf_9300_0000_ffff] {
        region.extend_from_slice(&descriptor.to_le_bytes());
    }
    region.resize(usize::from(GDTR), 0xcc);
    region.extend_from_slice(&(3u16 * 8 - 1).to_le_bytes());
    region.extend_from_slice(&(CODE32 + u32::from(GDT)).to_le_bytes());
    region.resize(usize::from(STUB16), 0xcc);
    let stub = stub16().map_err(asm_error)?;
    if stub.len() > usize::from(RESET - STUB16) {
        return Err(GuestError::Asm("16-bit stub too long".into()));
    }
    region.extend_from_slice(&stub);
    region.resize(usize::from(RESET), 0xcc);
    let mut reset = CodeAssembler::new(16).map_err(asm_error)?;
    reset
        .add_instruction(
            Instruction::with_branch(Code::Jmp_rel16, u64::from(STUB16)).map_err(asm_error)?,
        )
        .map_err(asm_error)?;
    region.extend_from_slice(&reset.assemble(u64::from(RESET)).map_err(asm_error)?);
    region.resize(CODE_REGION as usize, 0xcc);
    Ok(region)
}

/// Real mode to 32-bit protected mode with flat segments.
fn stub16() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(16)?;
    a.cli()?;
    a.cld()?;
    // A 32-bit operand size loads all 32 bits of the GDT base; CS is the only segment whose
    // base reaches the flash at reset.
    let gdtr = MemoryOperand::new(
        Register::None,
        Register::None,
        1,
        i64::from(GDTR),
        2,
        false,
        Register::CS,
    );
    a.add_instruction(Instruction::with1(Code::Lgdt_m1632, gdtr)?)?;
    a.mov(eax, cr0)?;
    a.or(eax, 1)?;
    a.mov(cr0, eax)?;
    a.add_instruction(Instruction::with_far_branch(
        Code::Jmp_ptr1632,
        0x08,
        CODE32,
    )?)?;
    a.assemble(u64::from(STUB16))
}

/// The guest's strings, NUL-terminated, at [`STRINGS`] (addresses known before the code is
/// assembled, since 32-bit code can only take a label's address through a memory operand).
struct Strings(Vec<u8>);

impl Strings {
    fn add(&mut self, text: &str) -> u32 {
        let address = CODE32 + u32::from(STRINGS) + self.0.len() as u32;
        self.0.extend_from_slice(text.as_bytes());
        self.0.push(0);
        address
    }
}

/// Routines shared by the main program.
struct Routines {
    putc: CodeLabel,
    puts: CodeLabel,
    puthex: CodeLabel,
    checksum: CodeLabel,
}

/// `mov esi, text; call puts`.
fn print(a: &mut CodeAssembler, r: &Routines, text: u32) -> Result<(), IcedError> {
    a.mov(esi, text)?;
    a.call(r.puts)
}

/// Prints `reg` in hex (`0x` and 8 digits).
fn print_hex(a: &mut CodeAssembler, r: &Routines, reg: AsmRegister32) -> Result<(), IcedError> {
    a.push(eax)?;
    if reg != eax {
        a.mov(eax, reg)?;
    }
    a.call(r.puthex)?;
    a.pop(eax)
}

/// The 32-bit code and its strings.
fn code32(p: &Params) -> Result<(Vec<u8>, Vec<u8>), IcedError> {
    let mut a = CodeAssembler::new(32)?;
    let mut s = Strings(Vec::new());
    let mut r = Routines {
        putc: a.create_label(),
        puts: a.create_label(),
        puthex: a.create_label(),
        checksum: a.create_label(),
    };
    let hello = s.add(&format!("pflash guest: workload {}\n", p.name));
    let cfi_qry = s.add("cfi: QRY, blocks ");
    let cfi_of = s.add(" of ");
    let newline = s.add("\n");
    let probe_failed = s.add("cfi probe failed: no QRY, wrong size or status\n");
    let initial_differs = s.add("mismatch: initial content checksum ");
    let final_differs = s.add("mismatch: final content checksum ");
    let expected = s.add(" expected ");
    let got = s.add(" got ");
    let workload = s.add("workload: operations ");
    let mismatch_op = s.add("mismatch: op ");
    let at_offset = s.add(" offset ");
    let result = s.add("result: mismatches ");
    let in_ops = s.add(" operations ");

    let mut probe_fail = a.create_label();
    let mut exit = a.create_label();

    // Flat data segments and a stack in RAM.
    a.mov(ax, 0x10)?;
    for seg in [ds, es, ss, fs, gs] {
        a.mov(seg, ax)?;
    }
    a.mov(esp, STACK_TOP)?;
    print(&mut a, &r, hello)?;

    // CFI probe: "QRY", then the geometry (blocks - 1 at 0x2D, sector / 256 at 0x2F), then
    // the status register, then back to read-array mode.
    a.mov(ebx, p.vars_base)?;
    a.mov(byte_ptr(ebx), 0x98)?;
    for (offset, letter) in [(0x10, b'Q'), (0x11, b'R'), (0x12, b'Y')] {
        a.movzx(eax, byte_ptr(ebx + offset))?;
        a.cmp(eax, u32::from(letter))?;
        a.jne(probe_fail)?;
    }
    a.movzx(eax, byte_ptr(ebx + 0x2d))?;
    a.movzx(ecx, byte_ptr(ebx + 0x2e))?;
    a.shl(ecx, 8)?;
    a.or(eax, ecx)?;
    a.inc(eax)?;
    a.movzx(ecx, byte_ptr(ebx + 0x2f))?;
    a.movzx(edx, byte_ptr(ebx + 0x30))?;
    a.shl(edx, 8)?;
    a.or(ecx, edx)?;
    a.shl(ecx, 8)?;
    print(&mut a, &r, cfi_qry)?;
    print_hex(&mut a, &r, eax)?;
    print(&mut a, &r, cfi_of)?;
    print_hex(&mut a, &r, ecx)?;
    print(&mut a, &r, newline)?;
    a.imul_2(eax, ecx)?;
    a.cmp(eax, p.vars_len)?;
    a.jne(probe_fail)?;
    // Query mode ignores every command but read array: leave it before reading status.
    a.mov(byte_ptr(ebx), 0xff)?;
    a.mov(byte_ptr(ebx), 0x70)?;
    a.movzx(eax, byte_ptr(ebx))?;
    a.cmp(eax, 0x80)?;
    a.jne(probe_fail)?;
    a.mov(byte_ptr(ebx), 0xff)?;

    // The content the workload starts from (read in array mode: no exits).
    a.xor(ebp, ebp)?;
    content_check(
        &mut a,
        &r,
        p.initial_checksum,
        initial_differs,
        expected,
        newline,
    )?;

    print(&mut a, &r, workload)?;
    a.mov(eax, p.ops)?;
    a.call(r.puthex)?;
    print(&mut a, &r, newline)?;
    workload_loop(
        &mut a,
        &r,
        p,
        [mismatch_op, at_offset, expected, got, newline],
    )?;

    // Back to read-array mode (a no-op if the workload ended there) and check the result.
    a.mov(ebx, p.vars_base)?;
    a.mov(byte_ptr(ebx), 0xff)?;
    content_check(
        &mut a,
        &r,
        p.final_checksum,
        final_differs,
        expected,
        newline,
    )?;
    print(&mut a, &r, result)?;
    print_hex(&mut a, &r, ebp)?;
    print(&mut a, &r, in_ops)?;
    print_hex(&mut a, &r, edi)?;
    print(&mut a, &r, newline)?;
    let mut report = a.create_label();
    a.mov(eax, ebp)?;
    a.test(eax, eax)?;
    a.jz(exit)?;
    a.cmp(eax, 125)?;
    a.jbe(report)?;
    a.mov(eax, 125)?;
    a.set_label(&mut report)?;
    a.add(eax, super::EXIT_MISMATCH_BASE)?;
    a.jmp(exit)?;

    a.set_label(&mut probe_fail)?;
    print(&mut a, &r, probe_failed)?;
    a.mov(eax, super::EXIT_PROBE_FAILED)?;

    a.set_label(&mut exit)?;
    a.mov(dx, u32::from(DEBUG_EXIT))?;
    a.out(dx, eax)?;
    let mut halt = a.create_label();
    a.set_label(&mut halt)?;
    a.cli()?;
    a.hlt()?;
    a.jmp(halt)?;

    routines(&mut a, &mut r, p)?;
    Ok((a.assemble(u64::from(CODE32))?, s.0))
}

/// Checksums the vars flash and counts a mismatch (in `ebp`) if it is not `expect`.
fn content_check(
    a: &mut CodeAssembler,
    r: &Routines,
    expect: u32,
    differs: u32,
    expected: u32,
    newline: u32,
) -> Result<(), IcedError> {
    let mut same = a.create_label();
    a.call(r.checksum)?;
    a.cmp(eax, expect)?;
    a.je(same)?;
    a.inc(ebp)?;
    print(a, r, differs)?;
    a.call(r.puthex)?;
    print(a, r, expected)?;
    a.mov(eax, expect)?;
    a.call(r.puthex)?;
    print(a, r, newline)?;
    a.set_label(&mut same)?;
    a.nop()
}

/// The table interpreter: `esi` walks the table, `edi` counts operations, `ebp` mismatches.
fn workload_loop(
    a: &mut CodeAssembler,
    r: &Routines,
    p: &Params,
    [mismatch_op, at_offset, expected, got, newline]: [u32; 5],
) -> Result<(), IcedError> {
    let mut next_op = a.create_label();
    let mut done = a.create_label();
    let mut read = a.create_label();
    let mut check = a.create_label();
    let mut next = a.create_label();
    a.mov(esi, p.table)?;
    a.xor(edi, edi)?;
    a.set_label(&mut next_op)?;
    a.mov(eax, dword_ptr(esi))?;
    a.mov(edx, dword_ptr(esi + 4))?;
    a.mov(ecx, eax)?;
    a.shr(ecx, 28)?;
    a.jz(done)?;
    a.mov(ebx, eax)?;
    a.and(ebx, 0x00ff_ffff)?;
    a.add(ebx, p.vars_base)?;
    a.shr(eax, 24)?;
    a.and(eax, 0xf)?;
    a.cmp(ecx, super::KIND_WRITE)?;
    a.jne(read)?;
    let mut w2 = a.create_label();
    let mut w4 = a.create_label();
    a.cmp(eax, 1)?;
    a.jne(w2)?;
    a.mov(byte_ptr(ebx), dl)?;
    a.jmp(next)?;
    a.set_label(&mut w2)?;
    a.cmp(eax, 2)?;
    a.jne(w4)?;
    a.mov(word_ptr(ebx), dx)?;
    a.jmp(next)?;
    a.set_label(&mut w4)?;
    a.mov(dword_ptr(ebx), edx)?;
    a.jmp(next)?;

    a.set_label(&mut read)?;
    let mut r2 = a.create_label();
    let mut r4 = a.create_label();
    a.cmp(eax, 1)?;
    a.jne(r2)?;
    a.movzx(eax, byte_ptr(ebx))?;
    a.jmp(check)?;
    a.set_label(&mut r2)?;
    a.cmp(eax, 2)?;
    a.jne(r4)?;
    a.movzx(eax, word_ptr(ebx))?;
    a.jmp(check)?;
    a.set_label(&mut r4)?;
    a.mov(eax, dword_ptr(ebx))?;
    a.set_label(&mut check)?;
    a.cmp(ecx, super::KIND_READ_CHECK)?;
    a.jne(next)?;
    a.cmp(eax, edx)?;
    a.je(next)?;
    a.inc(ebp)?;
    a.cmp(ebp, MISMATCHES_SHOWN)?;
    a.ja(next)?;
    print(a, r, mismatch_op)?;
    print_hex(a, r, edi)?;
    print(a, r, at_offset)?;
    a.sub(ebx, p.vars_base)?;
    print_hex(a, r, ebx)?;
    print(a, r, expected)?;
    print_hex(a, r, edx)?;
    print(a, r, got)?;
    print_hex(a, r, eax)?;
    print(a, r, newline)?;
    a.set_label(&mut next)?;
    a.add(esi, 8)?;
    a.inc(edi)?;
    a.jmp(next_op)?;
    a.set_label(&mut done)?;
    a.nop()
}

fn routines(a: &mut CodeAssembler, r: &mut Routines, p: &Params) -> Result<(), IcedError> {
    // putc: al to COM1 once the transmitter takes it; preserves every register.
    a.set_label(&mut r.putc)?;
    let mut wait = a.create_label();
    a.push(edx)?;
    a.push(eax)?;
    a.mov(dx, u32::from(COM1_LSR))?;
    a.set_label(&mut wait)?;
    a.in_(al, dx)?;
    a.test(al, LSR_THRE)?;
    a.jz(wait)?;
    a.pop(eax)?;
    a.mov(dx, u32::from(COM1))?;
    a.out(dx, al)?;
    a.pop(edx)?;
    a.ret()?;

    // puts: the NUL-terminated string at esi; preserves every register.
    a.set_label(&mut r.puts)?;
    let mut more = a.create_label();
    let mut end = a.create_label();
    a.pushad()?;
    a.set_label(&mut more)?;
    a.movzx(eax, byte_ptr(esi))?;
    a.test(eax, eax)?;
    a.jz(end)?;
    a.call(r.putc)?;
    a.inc(esi)?;
    a.jmp(more)?;
    a.set_label(&mut end)?;
    a.popad()?;
    a.ret()?;

    // puthex: eax as 0x and 8 hex digits; preserves every register.
    a.set_label(&mut r.puthex)?;
    let mut digit = a.create_label();
    let mut decimal = a.create_label();
    a.pushad()?;
    a.mov(edx, eax)?;
    a.mov(eax, u32::from(b'0'))?;
    a.call(r.putc)?;
    a.mov(eax, u32::from(b'x'))?;
    a.call(r.putc)?;
    a.mov(ecx, 8)?;
    a.set_label(&mut digit)?;
    a.rol(edx, 4)?;
    a.mov(eax, edx)?;
    a.and(eax, 0xf)?;
    a.cmp(eax, 10)?;
    a.jb(decimal)?;
    a.add(eax, u32::from(b'a' - b'0' - 10))?;
    a.set_label(&mut decimal)?;
    a.add(eax, u32::from(b'0'))?;
    a.call(r.putc)?;
    a.dec(ecx)?;
    a.jnz(digit)?;
    a.popad()?;
    a.ret()?;

    // checksum: eax = checksum of the vars flash (see `guest::checksum`).
    a.set_label(&mut r.checksum)?;
    let mut word = a.create_label();
    a.push(ebx)?;
    a.push(ecx)?;
    a.mov(ebx, p.vars_base)?;
    a.mov(ecx, p.vars_len / 4)?;
    a.xor(eax, eax)?;
    a.set_label(&mut word)?;
    a.rol(eax, 5)?;
    a.xor(eax, dword_ptr(ebx))?;
    a.imul_3(eax, eax, 0x0100_0193)?;
    a.add(ebx, 4)?;
    a.dec(ecx)?;
    a.jnz(word)?;
    a.pop(ecx)?;
    a.pop(ebx)?;
    a.ret()
}
