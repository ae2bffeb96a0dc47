//! Booting OVMF under QEMU with a FAT disk that carries `startup.nsh`.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{require_tool, Stack};

/// What the UEFI shell prints (on the serial console) while it counts down
/// before running `startup.nsh`; any key but ESC ends the wait at once.
const COUNTDOWN_PROMPT: &[u8] = b"or any other key to continue.";

/// The architectures edk2 builds for QEMU, with the machine each runs on here (TCG).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// OVMF on `q35`.
    X86_64,
    /// AAVMF on `virt` with `-cpu max`.
    Aarch64,
    /// `RISCV_VIRT_CODE.fd` on `virt` (OpenSBI, then edk2).
    Riscv64,
    /// `QEMU_EFI.fd` on `virt` with `-cpu la464`.
    Loongarch64,
}

impl Arch {
    /// QEMU's target name: `qemu-system-<target>`.
    pub fn qemu_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Riscv64 => "riscv64",
            Arch::Loongarch64 => "loongarch64",
        }
    }

    /// The file name UEFI boots from a removable medium: `BOOTX64.EFI`, `BOOTAA64.EFI`, …
    pub fn default_boot_file(self) -> &'static str {
        match self {
            Arch::X86_64 => "BOOTX64.EFI",
            Arch::Aarch64 => "BOOTAA64.EFI",
            Arch::Riscv64 => "BOOTRISCV64.EFI",
            Arch::Loongarch64 => "BOOTLOONGARCH64.EFI",
        }
    }

    /// `-machine`, `-cpu` and `-m` for this architecture; `smm` only applies to x86.
    fn machine_args(self, smm: bool) -> Vec<&'static str> {
        match self {
            Arch::X86_64 if smm => vec![
                "-machine",
                "q35,smm=on,accel=tcg",
                "-global",
                "driver=cfi.pflash01,property=secure,value=on",
                "-m",
                "256",
            ],
            Arch::X86_64 => vec!["-machine", "q35,accel=tcg", "-m", "256"],
            Arch::Aarch64 => vec!["-machine", "virt,accel=tcg", "-cpu", "max", "-m", "256"],
            Arch::Riscv64 => vec!["-machine", "virt,accel=tcg", "-m", "512"],
            Arch::Loongarch64 => vec!["-machine", "virt,accel=tcg", "-cpu", "la464", "-m", "1024"],
        }
    }
}

/// One OVMF boot: firmware, varstore, the shell script to run and the files
/// to put next to it.
///
/// The FAT disk is a virtio-blk disk, which the shell maps as `FS0:`.
#[derive(Debug, Clone)]
pub struct OvmfBoot<'a> {
    /// Firmware code, e.g. [`debian_firmware("OVMF_CODE_4M.fd")`](crate::debian_firmware);
    /// attached read-only as pflash unit 0.
    pub code: &'a Path,
    /// Variable store, attached *in place* as pflash unit 1: QEMU writes to
    /// it, so pass a copy when the original matters. Its size must match
    /// `code` (the `_4M` images go together).
    pub vars: &'a Path,
    /// Contents of `startup.nsh` (UEFI shell commands, one per line; `\n` is
    /// turned into the `\r\n` the shell expects). End it with `reset -s` so
    /// that QEMU exits; otherwise the boot runs into [`timeout`](Self::timeout).
    pub script: &'a str,
    /// Extra files for the FAT disk as (path, contents), e.g.
    /// `("EFI/TOOLS/X.EFI", bytes)`; `/` or `\` separate directories. Do not
    /// add `EFI/BOOT/BOOTX64.EFI` unless you mean it: OVMF boots that
    /// instead of the shell.
    pub files: Vec<(String, Vec<u8>)>,
    /// Run with SMM (`-machine q35,smm=on` and secure pflash), as the
    /// secure-boot builds (`OVMF_CODE_4M.secboot.fd`) require.
    pub smm: bool,
    /// Kill QEMU and fail with [`BootError::Timeout`] after this long.
    pub timeout: Duration,
    /// More QEMU arguments, appended last, e.g. `["-trace", "pflash_io_*"]`
    /// (trace output goes to QEMU's stderr, which [`BootError`] carries;
    /// `-trace file=…` keeps it). Empty by default.
    pub extra_args: Vec<String>,
    /// Ends the boot early: QEMU is killed as soon as this returns true for the serial log so
    /// far (ANSI escapes removed), and the boot counts as successful. For boots that never
    /// reach `reset -s` (a loader under test, Secure Boot refusals), so that a test waits for
    /// what it checks rather than for the timeout.
    pub stop_when: Option<fn(&str) -> bool>,
    /// The QEMU that runs the boot ([`Stack::Debian12`] unless set; the firmware is whatever
    /// `code` and `vars` are).
    pub stack: Stack,
    /// The firmware's architecture, which picks the QEMU binary and machine ([`Arch::X86_64`]
    /// unless set).
    pub arch: Arch,
    /// QEMU's block format of `vars` (`-drive if=pflash,format=…,unit=1`): `"raw"` unless set,
    /// `"qcow2"` for a store kept in a qcow2 image. The code drive is always raw.
    pub vars_format: &'a str,
}

impl<'a> OvmfBoot<'a> {
    /// A boot without extra files or SMM and with a two-minute timeout (a
    /// boot takes a few seconds; the margin is for slow, busy CI machines).
    pub fn new(code: &'a Path, vars: &'a Path, script: &'a str) -> Self {
        OvmfBoot {
            code,
            vars,
            script,
            files: Vec::new(),
            smm: false,
            timeout: Duration::from_secs(120),
            extra_args: Vec::new(),
            stop_when: None,
            stack: Stack::Debian12,
            arch: Arch::X86_64,
            vars_format: "raw",
        }
    }

    /// The same boot with `vars` attached in QEMU's block format `format` (`"raw"`,
    /// `"qcow2"`); see [`vars_format`](Self::vars_format).
    pub fn with_vars_format(mut self, format: &'a str) -> Self {
        self.vars_format = format;
        self
    }
}

/// What happened during a boot that ended with QEMU exiting by itself
/// successfully (normally through the script's `reset -s`).
#[derive(Debug)]
pub struct BootOutcome {
    /// The serial console log with ANSI escape sequences removed (the shell
    /// colours and positions its output), decoded lossily as UTF-8.
    pub serial: String,
    /// The serial console log exactly as QEMU sent it.
    pub serial_raw: Vec<u8>,
    /// The FAT disk image after the run, with whatever the script wrote.
    /// It lives in a temporary directory removed when `self` is dropped.
    pub disk: PathBuf,
    /// Wall-clock time from starting QEMU until it exited.
    pub elapsed: Duration,
    /// Whether the shell's 5-second `startup.nsh` countdown was seen and cut
    /// short with a key press.
    pub skipped_countdown: bool,
    /// Keeps `disk` alive.
    _dir: TempDir,
}

impl BootOutcome {
    /// Contents of a file on the FAT disk (`"dump.txt"`, `"/a/b.bin"`,
    /// `"a\\b.bin"`), read with mtools; `None` if it does not exist.
    pub fn read_file(&self, path_on_fat: &str) -> Option<Vec<u8>> {
        let output = mtools("mcopy")
            .arg("-i")
            .arg(&self.disk)
            .arg(fat_path(path_on_fat))
            .arg("-")
            .stderr(Stdio::null())
            .output()
            .ok()?;
        output.status.success().then_some(output.stdout)
    }
}

/// Why [`boot_ovmf`] failed. Variants that get as far as running QEMU carry
/// the serial log, and `Display` prints it, so a failing test shows what the
/// firmware and the shell said.
#[derive(Debug)]
pub enum BootError {
    /// Preparing the temporary directory or FAT disk failed.
    Setup(String),
    /// QEMU did not exit within [`OvmfBoot::timeout`] and was killed.
    Timeout {
        /// The timeout that expired.
        after: Duration,
        /// Serial log (ANSI escapes removed) up to the kill.
        serial: String,
        /// What QEMU wrote to stderr.
        stderr: String,
    },
    /// QEMU exited unsuccessfully (bad arguments, locked image, crash, …).
    Qemu {
        /// QEMU's exit status.
        status: ExitStatus,
        /// Serial log (ANSI escapes removed).
        serial: String,
        /// What QEMU wrote to stderr.
        stderr: String,
    },
}

impl BootError {
    /// The serial log, if QEMU ran.
    pub fn serial(&self) -> Option<&str> {
        match self {
            BootError::Setup(_) => None,
            BootError::Timeout { serial, .. } | BootError::Qemu { serial, .. } => Some(serial),
        }
    }
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, serial, stderr) = match self {
            BootError::Setup(msg) => return write!(f, "preparing the OVMF boot failed: {msg}"),
            BootError::Timeout {
                after,
                serial,
                stderr,
            } => (
                format!("QEMU did not exit within {after:?} and was killed (does the script end with `reset -s`?)"),
                serial,
                stderr,
            ),
            BootError::Qemu {
                status,
                serial,
                stderr,
            } => (format!("QEMU failed: {status}"), serial, stderr),
        };
        write!(
            f,
            "{what}\n--- QEMU stderr ---\n{stderr}\n--- serial console ---\n{serial}\n--- end ---"
        )
    }
}

impl std::error::Error for BootError {}

/// Boots OVMF under QEMU (TCG) and runs `boot.script` from the FAT disk.
///
/// Steps: build a FAT image holding `startup.nsh` and `boot.files` in a fresh
/// temporary directory (so parallel tests do not collide); start
/// `qemu-system-x86_64 -machine q35,accel=tcg` without network or display,
/// with the firmware as pflash and the serial console on a pipe; press Enter
/// when the shell's countdown prompt appears (saves about 4 s); wait for QEMU
/// to exit or for the timeout.
///
/// Returns `Ok` only if QEMU exited by itself with status 0, which is what
/// the shell's `reset -s` does. A script error does not stop the shell, so
/// check the script's results (files it wrote, the serial log), not just
/// `Ok`.
///
/// # Panics
///
/// If the stack's `qemu-system-x86_64`, `mkfs.vfat` or mtools are not installed (see
/// [`Stack::qemu`] and [`require_tool`]).
pub fn boot_ovmf(boot: &OvmfBoot) -> Result<BootOutcome, BootError> {
    let qemu = boot.stack.qemu(boot.arch.qemu_target());
    let dir = tempfile::Builder::new()
        .prefix("testkit-ovmf-")
        .tempdir()
        .map_err(|e| BootError::Setup(format!("creating a temporary directory: {e}")))?;
    let disk = dir.path().join("disk.img");
    make_fat_disk(dir.path(), &disk, boot).map_err(BootError::Setup)?;

    let stderr_path = dir.path().join("qemu-stderr.txt");
    let stderr_file = File::create(&stderr_path)
        .map_err(|e| BootError::Setup(format!("creating {}: {e}", stderr_path.display())))?;

    let mut cmd = Command::new(qemu);
    cmd.args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-nic", "none", "-serial", "stdio"])
        .args(boot.arch.machine_args(boot.smm));
    cmd.arg("-drive")
        .arg(drive_arg(
            "if=pflash,format=raw,unit=0,readonly=on",
            boot.code,
        ))
        .arg("-drive")
        .arg(drive_arg(
            &format!("if=pflash,format={},unit=1", boot.vars_format),
            boot.vars,
        ))
        .arg("-drive")
        .arg(drive_arg("if=none,id=fat,format=raw", &disk))
        .args(["-device", "virtio-blk-pci,drive=fat"])
        .args(&boot.extra_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // A file, not a pipe: nobody has to drain it while QEMU runs.
        .stderr(stderr_file);

    let started = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| BootError::Setup(format!("starting QEMU: {e}")))?;
    // Kills QEMU if anything below panics, so no stray QEMU outlives a test.
    let mut child = KillOnDrop(child);
    let stdin = child.0.stdin.take().expect("stdin is piped");
    let stdout = child.0.stdout.take().expect("stdout is piped");
    let serial = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let serial = Arc::clone(&serial);
        thread::spawn(move || read_serial(stdout, stdin, &serial))
    };

    let stopped_early = || {
        boot.stop_when.is_some_and(|stop| {
            let log = serial.lock().unwrap_or_else(|p| p.into_inner());
            stop(&strip_ansi(&log))
        })
    };
    let mut stopped = false;
    let status = loop {
        match child.0.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= boot.timeout => break None,
            Ok(None) if stopped_early() => {
                stopped = true;
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(BootError::Setup(format!("waiting for QEMU: {e}"))),
        }
    };
    let elapsed = started.elapsed();
    if status.is_none() {
        // Killing closes QEMU's stdout, which ends the reader thread.
        let _ = child.0.kill();
        let _ = child.0.wait();
    }
    // The reader ends at EOF, i.e. once QEMU (the only writer) has gone.
    let skipped_countdown = reader.join().unwrap_or(false);
    let serial_raw = std::mem::take(&mut *serial.lock().unwrap_or_else(|p| p.into_inner()));
    let serial = strip_ansi(&serial_raw);
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();

    match status {
        None if !stopped => Err(BootError::Timeout {
            after: boot.timeout,
            serial,
            stderr,
        }),
        Some(status) if !status.success() => Err(BootError::Qemu {
            status,
            serial,
            stderr,
        }),
        None | Some(_) => Ok(BootOutcome {
            serial,
            serial_raw,
            disk,
            elapsed,
            skipped_countdown,
            _dir: dir,
        }),
    }
}

/// Kills and reaps the child when dropped (a no-op once it has exited).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Copies QEMU's serial output into `serial` until EOF, pressing Enter once
/// when the shell's countdown prompt shows up. Returns whether it did.
pub(crate) fn read_serial(
    mut stdout: impl Read,
    mut stdin: ChildStdin,
    serial: &Mutex<Vec<u8>>,
) -> bool {
    let mut pressed = false;
    let mut buf = [0u8; 4096];
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut log = serial.lock().unwrap_or_else(|p| p.into_inner());
        // Only the new bytes plus enough overlap for a prompt split across
        // two reads need searching.
        let from = log.len().saturating_sub(COUNTDOWN_PROMPT.len());
        log.extend_from_slice(&buf[..n]);
        if !pressed && contains(&log[from..], COUNTDOWN_PROMPT) {
            // Carriage return = Enter: "any other key" than ESC starts the
            // script now instead of after 5 s. If the write fails the shell
            // just finishes its countdown.
            pressed = stdin.write_all(b"\r").and_then(|()| stdin.flush()).is_ok();
        }
    }
    // `stdin` is kept open until here: closing QEMU's stdin early would be
    // EOF on the guest's serial input.
    pressed
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Removes ANSI escape sequences (CSI `ESC [ … final`, and two-byte `ESC x`)
/// from the serial log and decodes it as UTF-8, lossily.
pub(crate) fn strip_ansi(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if b != 0x1b {
            out.push(b);
        } else if bytes.next_if_eq(&b'[').is_some() {
            // Parameters and intermediates, up to the final byte 0x40..=0x7e.
            for c in bytes.by_ref() {
                if (0x40..=0x7e).contains(&c) {
                    break;
                }
            }
        } else {
            bytes.next();
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `-drive` argument `{opts},file={path}`. QEMU splits options at commas, so
/// a comma in the path is doubled, which is QEMU's escape for it.
pub(crate) fn drive_arg(opts: &str, path: &Path) -> String {
    format!(
        "{opts},file={}",
        path.display().to_string().replace(',', ",,")
    )
}

/// An `mtools` command with settings that make it usable non-interactively.
fn mtools(program: &str) -> Command {
    let mut cmd = Command::new(require_tool(program));
    // Accept images mkfs.vfat made without geometry complaints, and never
    // wait for an answer on stdin (e.g. on a name clash).
    cmd.env("MTOOLS_SKIP_CHECK", "1").stdin(Stdio::null());
    cmd
}

/// `::/a/b` for mtools from `a/b`, `/a/b` or `a\b`.
fn fat_path(path: &str) -> String {
    format!("::/{}", path.replace('\\', "/").trim_start_matches('/'))
}

/// Runs `cmd`, turning failure into a message with its stderr.
fn run(cmd: &mut Command) -> Result<(), String> {
    let output = cmd
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("running {cmd:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Creates the FAT image `disk` with `startup.nsh` and `boot.files`, staging
/// file contents in `dir`.
pub(crate) fn make_fat_disk(dir: &Path, disk: &Path, boot: &OvmfBoot) -> Result<(), String> {
    // Room for the payload plus what the script writes (a `dmpstore` dump of
    // a 4M store is ~130 KiB as UCS-2); mkfs.vfat picks FAT16 at this size.
    let payload: usize = boot.files.iter().map(|(_, data)| data.len()).sum();
    let size_kib = 32 * 1024 + 2 * payload.div_ceil(1024);
    run(Command::new(require_tool("mkfs.vfat"))
        .arg("-C")
        .arg(disk)
        .arg(size_kib.to_string()))?;

    let script = boot.script.replace("\r\n", "\n").replace('\n', "\r\n");
    let files = std::iter::once(("startup.nsh", script.as_bytes()))
        .chain(boot.files.iter().map(|(p, d)| (p.as_str(), d.as_slice())));
    fill_fat(&disk.display().to_string(), dir, files)
}

/// Copies `files` (path on the file system, content) into the FAT file system `image` (an
/// mtools image spec: a path, or `path@@offset` for one inside a partitioned disk), making
/// parent directories as needed and staging contents in `dir`.
fn fill_fat<'a>(
    image: &str,
    dir: &Path,
    files: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Result<(), String> {
    let mut made_dirs = BTreeSet::new();
    for (index, (path, data)) in files.enumerate() {
        let target = fat_path(path);
        let parts: Vec<&str> = target[3..].split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(format!("bad path for the FAT disk: {path:?}"));
        }
        // mmd each missing parent directory, outermost first.
        for depth in 1..parts.len() {
            let parent = format!("::/{}", parts[..depth].join("/"));
            if made_dirs.insert(parent.clone()) {
                run(mtools("mmd").arg("-i").arg(image).arg(&parent))?;
            }
        }
        let staged = dir.join(format!("staged-{index}"));
        fs::write(&staged, data).map_err(|e| format!("writing {}: {e}", staged.display()))?;
        run(mtools("mcopy")
            .arg("-o")
            .arg("-i")
            .arg(image)
            .arg(&staged)
            .arg(&target))?;
        fs::remove_file(&staged).map_err(|e| format!("removing {}: {e}", staged.display()))?;
    }
    Ok(())
}

/// Makes `disk` a 64 MiB GPT disk with one EFI system partition (unique partition GUID
/// `partition`, from 1 MiB) holding `files`, with sfdisk, mkfs.vfat and mtools as an
/// installer would: a disk for boot entries that name their partition (`HD(…)`), attached
/// with [`OvmfBoot::extra_args`].
///
/// # Errors
///
/// A tool is missing (sfdisk is in Debian's fdisk package) or failed.
pub fn gpt_esp_disk(
    disk: &Path,
    partition: &str,
    files: &[(String, Vec<u8>)],
) -> Result<(), String> {
    const SECTORS: u64 = 64 * 2048;
    const FIRST: u64 = 2048;
    File::create(disk)
        .and_then(|f| f.set_len(SECTORS * 512))
        .map_err(|e| format!("creating {}: {e}", disk.display()))?;
    // The last 33 sectors hold the backup GPT.
    let size = SECTORS - FIRST - 2048;
    let layout = format!(
        "label: gpt\nstart={FIRST}, size={size}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid={partition}\n"
    );
    let mut child = Command::new(require_tool("sfdisk"))
        .arg("--quiet")
        .arg(disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running sfdisk: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(layout.as_bytes())
        .map_err(|e| format!("writing to sfdisk: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running sfdisk: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "sfdisk failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    run(Command::new(require_tool("mkfs.vfat"))
        .args(["--offset", &FIRST.to_string()])
        .arg(disk)
        .arg((size / 2).to_string()))?;
    let dir = disk.parent().unwrap_or(Path::new("."));
    fill_fat(
        &format!("{}@@{}", disk.display(), FIRST * 512),
        dir,
        files.iter().map(|(p, d)| (p.as_str(), d.as_slice())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ansi_sequences() {
        let raw = b"\x1b[2J\x1b[01;01H\x1b[=3hPress \x1b[1m\x1b[37m\x1b[40mESC\x1b[0m in 5";
        assert_eq!(strip_ansi(raw), "Press ESC in 5");
    }

    #[test]
    fn maps_paths_onto_the_fat_disk() {
        assert_eq!(fat_path("dump.txt"), "::/dump.txt");
        assert_eq!(fat_path("\\EFI\\BOOT\\X.EFI"), "::/EFI/BOOT/X.EFI");
        assert_eq!(fat_path("/a/b"), "::/a/b");
    }

    #[test]
    fn escapes_commas_in_drive_paths() {
        assert_eq!(
            drive_arg("if=none", Path::new("/tmp/a,b")),
            "if=none,file=/tmp/a,,b"
        );
    }
}
