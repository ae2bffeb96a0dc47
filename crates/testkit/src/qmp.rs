//! A QMP client and a long-running OVMF VM under QEMU, for migration tests.
//!
//! [`boot_ovmf`](crate::boot_ovmf) runs a VM to completion; migration needs VMs that keep
//! running and are driven from outside. [`QemuVm::start`] starts QEMU (TCG, q35) with the
//! same devices as `boot_ovmf` plus a QMP socket, optionally `-incoming` and `-S`, and kills
//! it when dropped. [`Qmp`] speaks the QEMU Machine Protocol over that unix socket:
//! greeting, `qmp_capabilities`, commands, asynchronous events, and waiting for a migration
//! to finish.
//!
//! Why our own client rather than the `qapi` crate (features `qmp`, sync; 0.15, evaluated
//! for issue 15): `qapi-qmp` generates typed commands and events from the QAPI schema of one
//! QEMU release, compiled from about 800 KB of schema by its build script into every test
//! build, while these tests drive QEMU 7.2 and 10.0 and need four commands, which untyped JSON
//! serves for both. Its sync client also reads without a deadline and panics
//! (`expect("unexpected eof")`) when QEMU closes the socket before its greeting, which is what
//! a QEMU that refuses its arguments or an incoming migration does here; this client turns
//! that into [`QmpError::Closed`] and bounds every read by a deadline, so a test fails with a
//! message instead of hanging or aborting.
//!
//! ```no_run
//! use testkit::{debian_firmware, make_startup_disk, QemuVm, VmConfig};
//! let dir = tempfile::tempdir().unwrap();
//! let (vars, disk) = (dir.path().join("vars.fd"), dir.path().join("disk.img"));
//! std::fs::copy(debian_firmware("OVMF_VARS_4M.fd"), &vars).unwrap();
//! make_startup_disk(&disk, "echo READY\n:loop\nstall 100000\ngoto loop\n").unwrap();
//! let code = debian_firmware("OVMF_CODE_4M.fd");
//! let mut vm = QemuVm::start(&VmConfig::new(&code, &vars, &disk)).unwrap();
//! vm.wait_serial("READY", std::time::Duration::from_secs(60)).unwrap();
//! assert_eq!(vm.qmp.status().unwrap(), "running");
//! ```

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::boot::{drive_arg, make_fat_disk, read_serial, strip_ansi};
use crate::{OvmfBoot, Stack};

/// A QMP failure.
#[derive(Debug)]
pub enum QmpError {
    /// The socket failed.
    Io(io::Error),
    /// QEMU answered a command with an error.
    Command {
        /// The command.
        command: String,
        /// QMP error class, e.g. `GenericError`.
        class: String,
        /// QEMU's message.
        desc: String,
    },
    /// Nothing arrived in time.
    Timeout(String),
    /// QEMU closed the connection (it exited).
    Closed,
    /// Something that is not QMP.
    Protocol(String),
}

impl fmt::Display for QmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QmpError::Io(e) => write!(f, "QMP socket: {e}"),
            QmpError::Command {
                command,
                class,
                desc,
            } => write!(f, "QMP {command} failed: {class}: {desc}"),
            QmpError::Timeout(what) => write!(f, "QMP: timed out waiting for {what}"),
            QmpError::Closed => f.write_str("QMP: QEMU closed the connection"),
            QmpError::Protocol(msg) => write!(f, "QMP protocol error: {msg}"),
        }
    }
}

impl std::error::Error for QmpError {}

impl From<io::Error> for QmpError {
    fn from(e: io::Error) -> Self {
        QmpError::Io(e)
    }
}

/// A QMP connection in command mode.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: Vec<serde_json::Value>,
}

impl Qmp {
    /// Connects to QEMU's QMP unix socket at `path`, retrying until `timeout` while QEMU is
    /// still starting, reads the greeting and negotiates capabilities.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() >= deadline => return Err(QmpError::Io(e)),
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        };
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            events: Vec::new(),
        };
        let greeting = qmp.read_message(Some(deadline))?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!("no greeting: {greeting}")));
        }
        qmp.execute("qmp_capabilities", serde_json::json!({}))?;
        Ok(qmp)
    }

    /// Reads one message; `None` waits for ever.
    fn read_message(&mut self, deadline: Option<Instant>) -> Result<serde_json::Value, QmpError> {
        let timeout = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(QmpError::Timeout("a QMP message".into()));
                }
                Some(left)
            }
            None => None,
        };
        self.reader.get_ref().set_read_timeout(timeout)?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(QmpError::Closed),
            Ok(_) => serde_json::from_str(&line)
                .map_err(|e| QmpError::Protocol(format!("{e}: {line:?}"))),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(QmpError::Timeout("a QMP message".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `command` with `arguments` (an object) and returns its `return` value. Events
    /// that arrive meanwhile are kept for [`wait_event`](Self::wait_event).
    pub fn execute(
        &mut self,
        command: &str,
        arguments: serde_json::Value,
    ) -> Result<serde_json::Value, QmpError> {
        let request = serde_json::json!({ "execute": command, "arguments": arguments });
        self.writer.write_all(format!("{request}\r\n").as_bytes())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let message = self.read_message(Some(deadline))?;
            if message.get("event").is_some() {
                self.events.push(message);
            } else if let Some(value) = message.get("return") {
                return Ok(value.clone());
            } else if let Some(error) = message.get("error") {
                let text = |key: &str| error[key].as_str().unwrap_or_default().to_string();
                return Err(QmpError::Command {
                    command: command.into(),
                    class: text("class"),
                    desc: text("desc"),
                });
            } else {
                return Err(QmpError::Protocol(format!("unexpected: {message}")));
            }
        }
    }

    /// Waits for the event `name` (one that already arrived counts) and returns it, removing
    /// it and every event before it from the queue.
    pub fn wait_event(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value, QmpError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
                let event = self.events.remove(i);
                self.events.drain(..i);
                return Ok(event);
            }
            match self.read_message(Some(deadline)) {
                Ok(message) if message.get("event").is_some() => self.events.push(message),
                Ok(message) => {
                    return Err(QmpError::Protocol(format!("unexpected: {message}")));
                }
                Err(QmpError::Timeout(_)) => {
                    return Err(QmpError::Timeout(format!("event {name}")));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Events received and not yet consumed by [`wait_event`](Self::wait_event).
    pub fn events(&self) -> &[serde_json::Value] {
        &self.events
    }

    /// `query-status`'s `status`: `running`, `paused`, `inmigrate`, `postmigrate`, `prelaunch`, …
    pub fn status(&mut self) -> Result<String, QmpError> {
        let status = self.execute("query-status", serde_json::json!({}))?;
        Ok(status["status"].as_str().unwrap_or_default().to_string())
    }

    /// Polls `query-migrate` until the migration ends (`completed`, `failed` or
    /// `cancelled`) and returns its last answer.
    pub fn wait_migration(&mut self, timeout: Duration) -> Result<serde_json::Value, QmpError> {
        let deadline = Instant::now() + timeout;
        loop {
            let info = self.execute("query-migrate", serde_json::json!({}))?;
            if matches!(
                info["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ) {
                return Ok(info);
            }
            if Instant::now() >= deadline {
                return Err(QmpError::Timeout(format!("the migration to end: {info}")));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Writes a FAT disk image at `disk` holding `startup.nsh` with `script` (lines joined with
/// `\r\n` for the shell), as [`boot_ovmf`](crate::boot_ovmf) builds its disk.
pub fn make_startup_disk(disk: &Path, script: &str) -> Result<(), String> {
    let staging = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let unused = Path::new("/dev/null");
    make_fat_disk(staging.path(), disk, &OvmfBoot::new(unused, unused, script))
}

/// How to start a [`QemuVm`].
#[derive(Debug, Clone)]
pub struct VmConfig<'a> {
    /// Firmware code (pflash unit 0, read-only).
    pub code: &'a Path,
    /// Varstore (pflash unit 1), used in place.
    pub vars: &'a Path,
    /// FAT disk (virtio-blk), e.g. from [`make_startup_disk`]. Used in place: give each VM
    /// of a migration its own copy.
    pub disk: &'a Path,
    /// `-incoming` URI, e.g. `tcp:127.0.0.1:4444`.
    pub incoming: Option<String>,
    /// Start paused (`-S`).
    pub paused: bool,
    /// Guest memory in MiB; source and destination must agree.
    pub memory_mib: u32,
    /// More QEMU arguments.
    pub extra_args: Vec<String>,
    /// The QEMU that runs the VM ([`Stack::Debian12`] unless set).
    pub stack: Stack,
    /// QEMU's block format of `vars`: `"raw"` unless set, `"qcow2"` for a store kept in a
    /// qcow2 image. The code drive is always raw.
    pub vars_format: &'a str,
}

impl<'a> VmConfig<'a> {
    /// A running (not incoming, not paused) VM with 256 MiB.
    pub fn new(code: &'a Path, vars: &'a Path, disk: &'a Path) -> Self {
        VmConfig {
            code,
            vars,
            disk,
            incoming: None,
            paused: false,
            memory_mib: 256,
            extra_args: Vec::new(),
            stack: Stack::Debian12,
            vars_format: "raw",
        }
    }

    /// The same VM with `vars` attached in QEMU's block format `format` (`"raw"`, `"qcow2"`).
    pub fn with_vars_format(mut self, format: &'a str) -> Self {
        self.vars_format = format;
        self
    }
}

/// A QEMU process with a QMP connection; killed (and reaped) when dropped, so no QEMU
/// outlives a test, even one that panics.
#[derive(Debug)]
pub struct QemuVm {
    child: Child,
    /// The QMP connection.
    pub qmp: Qmp,
    serial: Arc<Mutex<Vec<u8>>>,
    stderr_path: PathBuf,
    _dir: TempDir,
}

impl QemuVm {
    /// Starts QEMU and connects to its QMP socket.
    ///
    /// # Panics
    ///
    /// If the stack's `qemu-system-x86_64` is not installed (see [`Stack::qemu`]).
    pub fn start(config: &VmConfig) -> Result<Self, String> {
        let qemu = config.stack.qemu("x86_64");
        let dir = tempfile::Builder::new()
            .prefix("testkit-vm-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let socket = dir.path().join("qmp.sock");
        let stderr_path = dir.path().join("qemu-stderr.txt");
        let stderr = File::create(&stderr_path)
            .map_err(|e| format!("creating {}: {e}", stderr_path.display()))?;
        let mut cmd = Command::new(qemu);
        cmd.args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-nic", "none", "-serial", "stdio"])
            .args(["-machine", "q35,accel=tcg"])
            .args(["-m", &config.memory_mib.to_string()])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .arg("-drive")
            .arg(drive_arg(
                "if=pflash,format=raw,unit=0,readonly=on",
                config.code,
            ))
            .arg("-drive")
            .arg(drive_arg(
                &format!("if=pflash,format={},unit=1", config.vars_format),
                config.vars,
            ))
            .arg("-drive")
            .arg(drive_arg("if=none,id=fat,format=raw", config.disk))
            .args(["-device", "virtio-blk-pci,drive=fat"]);
        if let Some(uri) = &config.incoming {
            cmd.args(["-incoming", uri]);
        }
        if config.paused {
            cmd.arg("-S");
        }
        cmd.args(&config.extra_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd.spawn().map_err(|e| format!("starting QEMU: {e}"))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let serial = Arc::new(Mutex::new(Vec::new()));
        {
            let serial = Arc::clone(&serial);
            // Ends at EOF, when QEMU exits; presses Enter at the shell's countdown.
            thread::spawn(move || read_serial(stdout, stdin, &serial));
        }
        let qmp = match Qmp::connect(&socket, Duration::from_secs(30)) {
            Ok(qmp) => qmp,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
                return Err(format!("connecting to QMP: {e}; QEMU stderr:\n{stderr}"));
            }
        };
        Ok(QemuVm {
            child,
            qmp,
            serial,
            stderr_path,
            _dir: dir,
        })
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The serial console so far, ANSI escapes removed.
    pub fn serial(&self) -> String {
        strip_ansi(&self.serial.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// What QEMU wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits until the serial console shows `needle`.
    pub fn wait_serial(&self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let serial = self.serial();
            if serial.contains(needle) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{needle:?} did not appear on the serial console within {timeout:?}; \
                     serial:\n{serial}\nstderr:\n{}",
                    self.stderr()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for QEMU to exit by itself; `None` if it still runs after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether QEMU still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for `-incoming tcp:127.0.0.1:PORT`.
/// (QEMU must bind it itself; the tiny race with other programs is acceptable in tests.)
pub fn free_local_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
