//! QEMU's own `cfi.pflash01` driven through the qtest protocol, as a test
//! oracle for a flash device model.
//!
//! QEMU is started stopped (`-S`, TCG, no firmware ever runs) with the
//! variable store as pflash unit 1. The qtest chardev and the QMP monitor are
//! unix sockets on which *we* listen and QEMU connects (this QEMU build has no
//! `-accel qtest`, but `-qtest unix:SOCK` works with TCG). Memory commands
//! (`readb`…`readq`, `writeb`…`writeq`) reach the flash as MMIO; qtest has no
//! reset command, so [`QtestFlash::reset`] uses QMP `system_reset` and waits
//! for its `RESET` event.
//!
//! Commands are pipelined: [`QtestFlash::write`] only queues, and
//! [`QtestFlash::run`] sends a whole batch before reading the answers, so
//! 100,000 operations take a few seconds.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::Stack;

mod vmstate;
pub use vmstate::PflashVmstate;

/// End of the x86 flash window: pflash0 (code) ends at 4 GiB, pflash1 (vars)
/// sits directly below it (`hw/i386/pc_sysfw.c`).
const X86_FLASH_END: u64 = 0x1_0000_0000;
/// arm `virt`: the second flash bank (vars) is at 64 MiB (`hw/arm/virt.c`).
const ARM_VIRT_VARS_BASE: u64 = 0x0400_0000;
/// arm `virt`: each flash bank is 64 MiB and the drive must be exactly that.
const ARM_VIRT_BANK_LEN: u64 = 0x0400_0000;
/// riscv `virt`: the 64 MiB flash window at 0x2000_0000 holds two 32 MiB banks, the vars
/// bank second (`virt_memmap[VIRT_FLASH]` and `virt_flash_map` in `hw/riscv/virt.c`).
const RISCV_VIRT_VARS_BASE: u64 = 0x2200_0000;
/// riscv `virt`: each flash bank is 32 MiB and the drive must be exactly that.
const RISCV_VIRT_BANK_LEN: u64 = 0x0200_0000;
/// loongarch `virt`: the vars flash (`VIRT_FLASH1_BASE` in `include/hw/loongarch/virt.h`).
const LOONGARCH_VIRT_VARS_BASE: u64 = 0x1d00_0000;
/// loongarch `virt`: the vars flash is at most 16 MiB (`VIRT_FLASH1_SIZE`); QEMU maps a
/// smaller drive at its own size, this oracle takes exactly 16 MiB (the size of edk2's
/// `QEMU_VARS.fd` and of `pflash::Geometry::loongarch_virt`).
const LOONGARCH_VIRT_VARS_LEN: u64 = 0x0100_0000;
/// loongarch `virt`: the code flash, 16 MiB at 0x1c00_0000 (`VIRT_FLASH0_*`).
const LOONGARCH_VIRT_CODE_LEN: u64 = 0x0100_0000;
/// At most this many commands are in flight: their answers (≤ 23 bytes each)
/// must fit in the socket buffer, or QEMU and we would both block writing.
const MAX_IN_FLIGHT: usize = 1024;
/// How long QEMU gets to connect, answer one command, or quit.
const QEMU_TIMEOUT: Duration = Duration::from_secs(30);

/// One MMIO access for [`QtestFlash::run`]; offsets are relative to the
/// flash base, sizes are 1, 2, 4 or 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QtestOp {
    /// A read of `size` bytes; its value comes back from `run`.
    Read {
        /// Offset from the flash base.
        offset: u64,
        /// 1, 2, 4 or 8.
        size: u8,
    },
    /// A write of the low `size` bytes of `value`.
    Write {
        /// Offset from the flash base.
        offset: u64,
        /// 1, 2, 4 or 8.
        size: u8,
        /// Value, little-endian on the bus.
        value: u64,
    },
}

/// A QEMU process whose variable-store flash (`pflash1`) we read and write.
///
/// QEMU is killed when this is dropped; [`stop`](Self::stop) quits it
/// cleanly instead and hands back the backing file.
///
/// ```no_run
/// let dir = tempfile::tempdir().unwrap();
/// let vars = dir.path().join("vars.fd");
/// std::fs::copy(testkit::debian_firmware("OVMF_VARS_4M.fd"), &vars).unwrap();
/// let mut flash = testkit::QtestFlash::start_q35(testkit::Stack::Current, &vars).unwrap();
/// assert_eq!(flash.read(0x28, 4), 0x4856_465f); // "_FVH"
/// flash.write(0x10, 1, 0x70); // read status
/// assert_eq!(flash.read(0x10, 1), 0x80);
/// let file = flash.stop();
/// ```
#[derive(Debug)]
pub struct QtestFlash {
    child: Option<Child>,
    qtest_out: UnixStream,
    qtest_in: BufReader<UnixStream>,
    qmp_out: UnixStream,
    qmp_in: BufReader<UnixStream>,
    /// Guest-physical address of the vars flash.
    base: u64,
    len: u64,
    vars: PathBuf,
    /// Commands queued but not sent yet.
    outbuf: String,
    /// For every command sent or queued and not answered yet: whether it is a
    /// read (answer `OK 0x…`) rather than a write (answer `OK`).
    awaiting: VecDeque<bool>,
    /// The last commands, for error messages.
    recent: VecDeque<String>,
    /// Keeps the sockets and QEMU's stderr file.
    dir: TempDir,
}

impl QtestFlash {
    /// The `stack`'s QEMU `q35` with its `OVMF_CODE_4M.fd` as pflash0 and `vars_image` (used
    /// in place, as pflash1). The vars flash is mapped right below the code,
    /// which ends at 4 GiB; with the 4M images it is at 0xFFC00000.
    ///
    /// The first and last bytes are read through QEMU and compared with the
    /// file to check the mapping.
    pub fn start_q35(stack: Stack, vars_image: &Path) -> Result<Self, String> {
        Self::start_q35_with(stack, vars_image, false)
    }

    /// As [`start_q35`](Self::start_q35) but with the vars drive
    /// `readonly=on`: QEMU's device then refuses programs and erases with
    /// error bits in the status register (the file is never written).
    pub fn start_q35_read_only(stack: Stack, vars_image: &Path) -> Result<Self, String> {
        Self::start_q35_with(stack, vars_image, true)
    }

    fn start_q35_with(stack: Stack, vars_image: &Path, read_only: bool) -> Result<Self, String> {
        let code = stack.firmware("OVMF_CODE_4M.fd");
        let code_len = file_len(&code)?;
        let vars_len = file_len(vars_image)?;
        let base = X86_FLASH_END
            .checked_sub(code_len + vars_len)
            .ok_or("flash images larger than 4 GiB")?;
        let vars_opts = if read_only {
            "if=pflash,format=raw,unit=1,readonly=on"
        } else {
            "if=pflash,format=raw,unit=1"
        };
        let args = vec![
            "-machine".to_owned(),
            "q35,accel=tcg".to_owned(),
            "-drive".to_owned(),
            drive_arg("if=pflash,format=raw,unit=0,readonly=on", &code),
            "-drive".to_owned(),
            drive_arg(vars_opts, vars_image),
        ];
        Self::start(
            temp_dir()?,
            stack.qemu("x86_64"),
            args,
            vars_image,
            base,
            vars_len,
        )
    }

    /// QEMU arm `virt` (`-cpu max`) with an all-zero sparse 64 MiB code bank
    /// and `vars_image` (used in place; it must be 64 MiB, sparse is fine) as
    /// the second bank at 0x04000000: `width` 4, `device-width` 2.
    pub fn start_arm_virt(stack: Stack, vars_image: &Path) -> Result<Self, String> {
        Self::start_virt(
            stack,
            vars_image,
            VirtMachine {
                name: "arm",
                target: "aarch64",
                extra_args: &["-cpu", "max"],
                code_len: ARM_VIRT_BANK_LEN,
                vars_base: ARM_VIRT_VARS_BASE,
                vars_len: ARM_VIRT_BANK_LEN,
            },
        )
    }

    /// QEMU riscv `virt` (`qemu-system-riscv64`, `-bios none`: nothing runs) with an
    /// all-zero sparse 32 MiB code bank and `vars_image` (used in place; it must be 32 MiB,
    /// sparse is fine) as the second bank at 0x22000000: `width` 4, `device-width` 2, ids
    /// 0x89, 0x18, 256 KiB sectors (`hw/riscv/virt.c`).
    ///
    /// ```no_run
    /// let dir = tempfile::tempdir().unwrap();
    /// let vars = dir.path().join("vars.fd");
    /// std::fs::File::create(&vars).unwrap().set_len(32 << 20).unwrap();
    /// let mut flash = testkit::QtestFlash::start_riscv_virt(testkit::Stack::Current, &vars).unwrap();
    /// assert_eq!(flash.base(), 0x2200_0000);
    /// flash.write(0, 4, 0x0090_0090); // read identifier, both chips
    /// assert_eq!(flash.read(0, 4), 0x0089_0089);
    /// ```
    pub fn start_riscv_virt(stack: Stack, vars_image: &Path) -> Result<Self, String> {
        Self::start_virt(
            stack,
            vars_image,
            VirtMachine {
                name: "riscv",
                target: "riscv64",
                extra_args: &["-bios", "none"],
                code_len: RISCV_VIRT_BANK_LEN,
                vars_base: RISCV_VIRT_VARS_BASE,
                vars_len: RISCV_VIRT_BANK_LEN,
            },
        )
    }

    /// QEMU loongarch `virt` (`qemu-system-loongarch64`, since QEMU 9.1 with two flashes)
    /// with an all-zero sparse 16 MiB code flash and `vars_image` (used in place; it must be
    /// 16 MiB, sparse is fine) as the vars flash at 0x1d000000: `width` 4, `device-width` 2,
    /// ids 0x89, 0x18, 256 KiB sectors (`hw/loongarch/virt.c`). QEMU 7.2 has no such
    /// machine in our build: use [`Stack::Current`].
    ///
    /// ```no_run
    /// let dir = tempfile::tempdir().unwrap();
    /// let vars = dir.path().join("vars.fd");
    /// std::fs::File::create(&vars).unwrap().set_len(16 << 20).unwrap();
    /// let mut flash = testkit::QtestFlash::start_loongarch_virt(testkit::Stack::Current, &vars).unwrap();
    /// assert_eq!(flash.base(), 0x1d00_0000);
    /// ```
    pub fn start_loongarch_virt(stack: Stack, vars_image: &Path) -> Result<Self, String> {
        Self::start_virt(
            stack,
            vars_image,
            VirtMachine {
                name: "loongarch",
                target: "loongarch64",
                extra_args: &[],
                code_len: LOONGARCH_VIRT_CODE_LEN,
                vars_base: LOONGARCH_VIRT_VARS_BASE,
                vars_len: LOONGARCH_VIRT_VARS_LEN,
            },
        )
    }

    /// A `virt` machine with an all-zero sparse code flash as pflash0 and `vars_image` as
    /// pflash1.
    fn start_virt(stack: Stack, vars_image: &Path, machine: VirtMachine) -> Result<Self, String> {
        let vars_len = file_len(vars_image)?;
        if vars_len != machine.vars_len {
            return Err(format!(
                "{}: {} virt vars flashes are {} bytes, this is {vars_len}",
                vars_image.display(),
                machine.name,
                machine.vars_len
            ));
        }
        let dir = temp_dir()?;
        // All zero and sparse: no firmware runs, and it costs no disk space.
        let code = dir.path().join("code.fd");
        File::create(&code)
            .and_then(|f| f.set_len(machine.code_len))
            .map_err(|e| format!("creating {}: {e}", code.display()))?;
        let mut args = vec!["-machine".to_owned(), "virt,accel=tcg".to_owned()];
        args.extend(machine.extra_args.iter().map(|a| (*a).to_owned()));
        args.extend([
            "-drive".to_owned(),
            drive_arg("if=pflash,format=raw,unit=0,readonly=on", &code),
            "-drive".to_owned(),
            drive_arg("if=pflash,format=raw,unit=1", vars_image),
        ]);
        Self::start(
            dir,
            stack.qemu(machine.target),
            args,
            vars_image,
            machine.vars_base,
            vars_len,
        )
    }

    fn start(
        dir: TempDir,
        qemu: PathBuf,
        machine_args: Vec<String>,
        vars: &Path,
        base: u64,
        len: u64,
    ) -> Result<Self, String> {
        let qtest_sock = dir.path().join("qtest.sock");
        let qmp_sock = dir.path().join("qmp.sock");
        let listen = |path: &Path| {
            let listener =
                UnixListener::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))?;
            listener
                .set_nonblocking(true)
                .map_err(|e| format!("socket setup: {e}"))?;
            Ok::<_, String>(listener)
        };
        let qtest_listener = listen(&qtest_sock)?;
        let qmp_listener = listen(&qmp_sock)?;
        let stderr_path = dir.path().join("qemu-stderr.txt");
        let stderr_file = File::create(&stderr_path)
            .map_err(|e| format!("creating {}: {e}", stderr_path.display()))?;

        let mut cmd = Command::new(&qemu);
        cmd.args(["-nodefaults", "-no-user-config", "-display", "none", "-S"])
            .args(machine_args)
            .arg("-qtest")
            .arg(format!("unix:{}", qtest_sock.display()))
            .args(["-qtest-log", "none"])
            .arg("-qmp")
            .arg(format!("unix:{}", qmp_sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr_file);
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", qemu.display()))?;
        // From here on, an early return drops `child` inside a guard that
        // kills it.
        let mut guard = KillOnDrop(Some(child));
        let stderr = || fs::read_to_string(&stderr_path).unwrap_or_default();

        let mut accept = |listener: &UnixListener, what: &str| {
            let deadline = Instant::now() + QEMU_TIMEOUT;
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream
                            .set_nonblocking(false)
                            .and_then(|()| stream.set_read_timeout(Some(QEMU_TIMEOUT)))
                            .map_err(|e| format!("socket setup: {e}"))?;
                        return Ok(stream);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(format!("accepting the {what} connection: {e}")),
                }
                if let Ok(Some(status)) = guard.child().try_wait() {
                    return Err(format!(
                        "QEMU exited ({status}) before connecting its {what} socket:\n{}",
                        stderr()
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "QEMU did not connect its {what} socket:\n{}",
                        stderr()
                    ));
                }
                thread::sleep(Duration::from_millis(5));
            }
        };
        let qtest = accept(&qtest_listener, "qtest")?;
        let qmp = accept(&qmp_listener, "QMP")?;
        let clone = |s: &UnixStream| s.try_clone().map_err(|e| format!("socket clone: {e}"));

        let mut flash = QtestFlash {
            child: guard.0.take(),
            qtest_out: clone(&qtest)?,
            qtest_in: BufReader::new(qtest),
            qmp_out: clone(&qmp)?,
            qmp_in: BufReader::new(qmp),
            base,
            len,
            vars: vars.to_owned(),
            outbuf: String::new(),
            awaiting: VecDeque::new(),
            recent: VecDeque::new(),
            dir,
        };
        // Greeting, then leave capabilities negotiation mode.
        flash.qmp_line()?;
        flash.qmp_command(r#"{"execute":"qmp_capabilities"}"#, None)?;
        flash.check_mapping()?;
        Ok(flash)
    }

    /// Compares what QEMU reads at the start and end of the flash (array
    /// mode after start-up) with the file, so a wrong base address fails
    /// here rather than as a thousand mismatches.
    fn check_mapping(&mut self) -> Result<(), String> {
        let file = fs::read(&self.vars).map_err(|e| format!("{}: {e}", self.vars.display()))?;
        let tail = self.len - 64;
        for start in [0, tail] {
            for i in (0..64).step_by(8) {
                let offset = start + i;
                let at = offset as usize;
                let expected = u64::from_le_bytes(file[at..at + 8].try_into().expect("8 bytes"));
                let got = self.read(offset, 8);
                if got != expected {
                    return Err(format!(
                        "{}: QEMU reads {got:#x} at flash offset {offset:#x} (address {:#x}), \
                         the file has {expected:#x}: the flash is not mapped where expected",
                        self.vars.display(),
                        self.base + offset
                    ));
                }
            }
        }
        Ok(())
    }

    /// Guest-physical address of the flash.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Size of the flash in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: QEMU refuses empty flash.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The backing file (QEMU writes through to it on every program/erase).
    pub fn path(&self) -> &Path {
        &self.vars
    }

    /// Reads `size` (1, 2, 4, 8) bytes at `offset`, little-endian.
    ///
    /// # Panics
    ///
    /// On a bad size or offset, or if QEMU fails or answers unexpectedly (the
    /// message has QEMU's stderr and the last commands sent).
    pub fn read(&mut self, offset: u64, size: u8) -> u64 {
        self.run(&[QtestOp::Read { offset, size }])[0]
    }

    /// Writes the low `size` (1, 2, 4, 8) bytes of `value` at `offset`. The
    /// command is only queued: it is sent with the next read, `run`,
    /// [`sync`](Self::sync) or when the queue is full.
    ///
    /// # Panics
    ///
    /// As [`read`](Self::read).
    pub fn write(&mut self, offset: u64, size: u8, value: u64) {
        self.queue(QtestOp::Write {
            offset,
            size,
            value,
        });
        if self.awaiting.len() >= MAX_IN_FLIGHT {
            self.sync();
        }
    }

    /// Runs `ops` in order, pipelined, and returns the values of the reads
    /// among them, in order.
    ///
    /// # Panics
    ///
    /// As [`read`](Self::read).
    pub fn run(&mut self, ops: &[QtestOp]) -> Vec<u64> {
        let mut values = Vec::new();
        for chunk in ops.chunks(MAX_IN_FLIGHT / 2) {
            if self.awaiting.len() + chunk.len() > MAX_IN_FLIGHT {
                self.drain(&mut values);
            }
            for op in chunk {
                self.queue(*op);
            }
            self.drain(&mut values);
        }
        values
    }

    /// Sends every queued write and waits until QEMU has done them.
    pub fn sync(&mut self) {
        let mut values = Vec::new();
        self.drain(&mut values);
        debug_assert!(values.is_empty());
    }

    /// System reset through QMP `system_reset` (qtest has no reset command);
    /// returns once QEMU reports the reset done. The flash goes back to read
    /// array mode with status 0x80. The CPU stays stopped.
    ///
    /// # Panics
    ///
    /// As [`read`](Self::read).
    pub fn reset(&mut self) {
        self.sync();
        self.note("system_reset (QMP)".to_owned());
        if let Err(e) = self.qmp_command(r#"{"execute":"system_reset"}"#, Some("RESET")) {
            self.fail(&e);
        }
    }

    /// The registers QEMU migrates for the vars flash (its `pflash_cfi01` vmstate section,
    /// instance 1: pflash1), read from a real migration stream: QMP `migrate` to
    /// `exec:cat > FILE` in the QEMU's temporary directory, then the section is looked up
    /// in the file. QEMU stays paused afterwards (`postmigrate`) and still answers qtest.
    ///
    /// For what the guest cannot read, such as the buffered-write counter.
    ///
    /// ```no_run
    /// # let vars = std::path::Path::new("vars.fd");
    /// let mut flash = testkit::QtestFlash::start_q35(testkit::Stack::Current, vars).unwrap();
    /// flash.write(0x10, 1, 0x70);
    /// let regs = flash.vars_vmstate().unwrap();
    /// assert_eq!((regs.cmd, regs.status), (0x70, 0x80));
    /// ```
    ///
    /// # Errors
    ///
    /// QMP refuses, the migration fails or does not complete within 30 s, or the stream has
    /// no such section (the message says which).
    pub fn vars_vmstate(&mut self) -> Result<PflashVmstate, String> {
        self.sync();
        let file = self.dir.path().join("vmstate.bin");
        let command = format!(
            r#"{{"execute":"migrate","arguments":{{"uri":"exec:cat > {}"}}}}"#,
            file.display()
        );
        self.qmp_command(&command, None)?;
        let deadline = Instant::now() + QEMU_TIMEOUT;
        loop {
            let status = self.qmp_query(r#"{"execute":"query-migrate"}"#)?;
            if status.contains(r#""status": "completed""#) {
                break;
            }
            if status.contains(r#""status": "failed""#) || Instant::now() > deadline {
                return Err(format!(
                    "migration to {} did not complete: {status}",
                    file.display()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
        let stream = fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        PflashVmstate::find(&stream, 1).ok_or_else(|| {
            format!(
                "{}: no pflash_cfi01 section of instance 1 in the {}-byte migration stream",
                file.display(),
                stream.len()
            )
        })
    }

    /// Sends a QMP command and returns its `return` line.
    fn qmp_query(&mut self, command: &str) -> Result<String, String> {
        self.qmp_out
            .write_all(format!("{command}\n").as_bytes())
            .map_err(|e| format!("sending to QMP: {e}"))?;
        loop {
            let line = self.qmp_line()?;
            if line.contains(r#""error""#) {
                return Err(format!("QMP {command} failed: {}", line.trim()));
            }
            if line.starts_with(r#"{"return""#) {
                return Ok(line);
            }
        }
    }

    /// Quits QEMU (QMP `quit`, so the backing file is complete and closed)
    /// and returns the path of the file.
    ///
    /// # Panics
    ///
    /// If QEMU does not exit within 30 s (it is killed first).
    pub fn stop(mut self) -> PathBuf {
        self.sync();
        // QEMU may close the socket before or after answering `quit`.
        let _ = self.qmp_command(r#"{"execute":"quit"}"#, None);
        let mut child = self.child.take().expect("QEMU runs until stop");
        let deadline = Instant::now() + QEMU_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("QEMU did not quit within {QEMU_TIMEOUT:?}; killed");
                }
            }
        }
        self.vars.clone()
    }

    fn queue(&mut self, op: QtestOp) {
        let (line, answer) = match op {
            QtestOp::Read { offset, size } => {
                let address = self.address(offset, size);
                (format!("read{} {address:#x}", suffix(size)), true)
            }
            QtestOp::Write {
                offset,
                size,
                value,
            } => {
                let address = self.address(offset, size);
                let value = if size == 8 {
                    value
                } else {
                    value & ((1u64 << (8 * u32::from(size))) - 1)
                };
                (
                    format!("write{} {address:#x} {value:#x}", suffix(size)),
                    false,
                )
            }
        };
        let _ = writeln!(self.outbuf, "{line}");
        self.note(line);
        self.awaiting.push_back(answer);
    }

    fn address(&self, offset: u64, size: u8) -> u64 {
        assert!(
            matches!(size, 1 | 2 | 4 | 8),
            "access size must be 1, 2, 4 or 8, not {size}"
        );
        assert!(
            offset + u64::from(size) <= self.len,
            "access {offset:#x}+{size} beyond the {:#x}-byte flash",
            self.len
        );
        self.base + offset
    }

    /// Sends the queued commands and reads every outstanding answer,
    /// appending the values of reads to `values`.
    fn drain(&mut self, values: &mut Vec<u64>) {
        if !self.outbuf.is_empty() {
            let text = std::mem::take(&mut self.outbuf);
            if let Err(e) = self.qtest_out.write_all(text.as_bytes()) {
                self.fail(&format!("sending to qtest: {e}"));
            }
        }
        let mut line = String::new();
        while let Some(is_read) = self.awaiting.pop_front() {
            line.clear();
            match self.qtest_in.read_line(&mut line) {
                Ok(0) => self.fail("qtest socket closed"),
                Ok(_) => {}
                Err(e) => self.fail(&format!("reading from qtest: {e}")),
            }
            let reply = line.trim_end();
            match (is_read, reply.strip_prefix("OK")) {
                (false, Some("")) => {}
                (true, Some(hex)) => match hex
                    .strip_prefix(" 0x")
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                {
                    Some(v) => values.push(v),
                    None => self.fail(&format!("unexpected qtest answer {reply:?}")),
                },
                // Asynchronous lines (IRQ …) are not enabled; anything else is
                // an error.
                _ => self.fail(&format!("unexpected qtest answer {reply:?}")),
            }
        }
    }

    fn note(&mut self, line: String) {
        if self.recent.len() == 20 {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }

    fn fail(&mut self, what: &str) -> ! {
        let stderr =
            fs::read_to_string(self.dir.path().join("qemu-stderr.txt")).unwrap_or_default();
        let status = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => format!("QEMU exited: {status}"),
            _ => "QEMU still running".to_owned(),
        };
        let recent: Vec<&str> = self.recent.iter().map(String::as_str).collect();
        panic!(
            "qtest: {what} ({status})\nlast commands:\n  {}\nQEMU stderr:\n{stderr}",
            recent.join("\n  ")
        );
    }

    fn qmp_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.qmp_in.read_line(&mut line) {
            Ok(0) => Err("QMP socket closed".to_owned()),
            Ok(_) => Ok(line),
            Err(e) => Err(format!("reading from QMP: {e}")),
        }
    }

    /// Sends a QMP command and reads until its `return` and, if asked, the
    /// named event (they may come in either order).
    fn qmp_command(&mut self, command: &str, event: Option<&str>) -> Result<(), String> {
        self.qmp_out
            .write_all(format!("{command}\n").as_bytes())
            .map_err(|e| format!("sending to QMP: {e}"))?;
        let event_tag = event.map(|e| format!(r#""event": "{e}""#));
        let (mut returned, mut seen_event) = (false, event.is_none());
        while !(returned && seen_event) {
            let line = self.qmp_line()?;
            if line.contains(r#""error""#) {
                return Err(format!("QMP {command} failed: {}", line.trim()));
            }
            returned |= line.starts_with(r#"{"return""#);
            if let Some(tag) = &event_tag {
                seen_event |= line.contains(tag.as_str());
            }
        }
        Ok(())
    }
}

impl Drop for QtestFlash {
    fn drop(&mut self) {
        KillOnDrop(self.child.take());
    }
}

/// Where a `virt` machine puts its flashes, and how to start it.
struct VirtMachine {
    /// For messages: `arm`, `riscv`, `loongarch`.
    name: &'static str,
    /// `qemu-system-<target>`.
    target: &'static str,
    /// Arguments besides `-machine` and the drives.
    extra_args: &'static [&'static str],
    /// Size of the code flash (pflash0).
    code_len: u64,
    /// Guest-physical address of the vars flash (pflash1).
    vars_base: u64,
    /// Size the vars image must have.
    vars_len: u64,
}

/// Kills and reaps QEMU when dropped, unless it has been taken out.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child present")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

fn suffix(size: u8) -> char {
    match size {
        1 => 'b',
        2 => 'w',
        4 => 'l',
        _ => 'q',
    }
}

/// A directory for the sockets, QEMU's stderr and (arm) the code bank.
fn temp_dir() -> Result<TempDir, String> {
    tempfile::Builder::new()
        .prefix("testkit-qtest-")
        .tempdir()
        .map_err(|e| format!("creating a temporary directory: {e}"))
}

fn file_len(path: &Path) -> Result<u64, String> {
    fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `-drive` argument `{opts},file={path}`, with QEMU's comma escaping.
fn drive_arg(opts: &str, path: &Path) -> String {
    format!(
        "{opts},file={}",
        path.display().to_string().replace(',', ",,")
    )
}

#[cfg(test)]
mod tests;
