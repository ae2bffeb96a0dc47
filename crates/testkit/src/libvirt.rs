//! A real libvirt for tests: Debian 12's `libvirtd` (9.0) with the QEMU 7.2 of
//! [`Stack::Debian12`] as emulator, reached with `virsh`.
//!
//! `scripts/test` starts `virtlogd -d` and `libvirtd -d` when they are not running (this
//! machine has no systemd) and stops what it started. [`Libvirt::require`] checks that the
//! daemon answers and *panics* with what to do when it does not, so a CI machine without
//! libvirt fails the tests instead of passing them vacuously; only
//! `NVRAM_TESTS_WITHOUT_LIBVIRT=1` skips them (then `require` returns `None`).
//!
//! libvirt 9.0 takes the generated wrapper `target/peers/qemu-7.2/bin/qemu-system-x86_64` as
//! `<emulator>`: it probes the capabilities by running it, and the wrapper `exec`s the real
//! binary with its own `-L` and `QEMU_MODULE_DIR` (libvirt clears the environment, the wrapper
//! sets it again). QEMU runs as `libvirt-qemu`, so the files a domain uses live in
//! directories anyone may enter ([`Libvirt::tempdir`]).
//!
//! ```no_run
//! use testkit::libvirt::{DomainXml, Libvirt};
//!
//! let Some(libvirt) = Libvirt::require() else { return };
//! let dir = libvirt.tempdir();
//! let xml = DomainXml::efi(&testkit::libvirt::unique_name("doc"), &dir.path().join("serial.log"));
//! let domain = libvirt.define(&xml);
//! libvirt.virsh(&["start", domain.uuid()]);
//! // … undefined with --nvram (destroyed first if running) when `domain` is dropped.
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Stack;

/// The environment variable that, set to `1`, makes [`Libvirt::require`] return `None`
/// (tests skip) instead of panicking when libvirtd is not reachable.
pub const OPT_OUT: &str = "NVRAM_TESTS_WITHOUT_LIBVIRT";

/// `libvirtd`'s pid file when it runs as root (`libvirtd -d`).
pub const LIBVIRTD_PID_FILE: &str = "/run/libvirtd.pid";
/// `virtlogd`'s pid file when it runs as root (`virtlogd -d`).
pub const VIRTLOGD_PID_FILE: &str = "/run/virtlogd.pid";

/// The connection the tests use: `$NVRAM_LIBVIRT_URI`, else `qemu:///system`.
pub fn uri() -> String {
    std::env::var("NVRAM_LIBVIRT_URI")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "qemu:///system".to_string())
}

/// A domain name no other test (or run) uses: `nvram-test-PREFIX-PID-N`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "nvram-test-{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `text` with the five XML special characters escaped, for element text and attribute values.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The process id in a daemon's pid file, if that process is alive.
pub fn daemon_pid(pid_file: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// A serial console log as text: ANSI escape sequences (the shell's colours and cursor
/// positioning) removed, decoded lossily as UTF-8.
pub fn console_text(raw: &[u8]) -> String {
    crate::boot::strip_ansi(raw)
}

/// A libvirt daemon that answered.
#[derive(Debug, Clone)]
pub struct Libvirt {
    uri: String,
}

impl Libvirt {
    /// The daemon at [`uri`], checked with `virsh uri`.
    ///
    /// # Panics
    ///
    /// When it does not answer, saying what to start, unless [`OPT_OUT`] is `1` (then
    /// `None`, and a note on stderr).
    pub fn require() -> Option<Libvirt> {
        let uri = uri();
        let answer = Command::new(virsh_program())
            .args(["-q", "-c", &uri, "uri"])
            .stdin(Stdio::null())
            .output();
        let problem = match answer {
            Ok(out) if out.status.success() => return Some(Libvirt { uri }),
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(e) => format!("cannot run virsh: {e} (install libvirt-clients)"),
        };
        if std::env::var(OPT_OUT).as_deref() == Ok("1") {
            eprintln!("libvirt tests skipped ({OPT_OUT}=1): {problem}");
            return None;
        }
        panic!(
            "libvirtd is not reachable at {uri}: {problem}\n\
             scripts/test starts it (virtlogd -d; libvirtd -d) after scripts/install-test-deps \
             installed libvirt-daemon-system and libvirt-clients; set {OPT_OUT}=1 to skip the \
             libvirt tests"
        );
    }

    /// The connection URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Runs `virsh -c URI ARGS…` (no shell: each argument is passed as it is) and returns its
    /// stdout, or what it said on stderr.
    pub fn try_virsh(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(virsh_program())
            .args(["-q", "-c", &self.uri])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run virsh: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "virsh {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// [`try_virsh`](Self::try_virsh), panicking on failure.
    pub fn virsh(&self, args: &[&str]) -> String {
        self.try_virsh(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A temporary directory QEMU (running as `libvirt-qemu`) can enter: mode 0755.
    pub fn tempdir(&self) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("nvram-libvirt-")
            .tempdir()
            .expect("a temporary directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the temporary directory");
        dir
    }

    /// Defines the domain (`virsh define`) and returns a guard that undefines it.
    ///
    /// # Panics
    ///
    /// If libvirt refuses the XML.
    pub fn define(&self, xml: &DomainXml) -> DefinedDomain {
        self.define_xml(&xml.name, &xml.to_xml())
    }

    /// Defines a domain from its XML text; `name` is the one in the XML.
    pub fn define_xml(&self, name: &str, xml: &str) -> DefinedDomain {
        let file = tempfile::NamedTempFile::new().expect("a temporary file");
        std::fs::write(file.path(), xml).expect("write the domain XML");
        self.virsh(&["define", &file.path().to_string_lossy()]);
        let uuid = self.virsh(&["domuuid", name]).trim().to_string();
        DefinedDomain {
            libvirt: self.clone(),
            name: name.to_string(),
            uuid,
        }
    }

    /// The domain's state as `virsh domstate` says it (`running`, `shut off`, …).
    pub fn state(&self, uuid: &str) -> String {
        self.virsh(&["domstate", uuid]).trim().to_string()
    }

    /// Waits until the domain is no longer running (it powered itself off), up to `timeout`.
    pub fn wait_shut_off(&self, uuid: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state(uuid);
            if state == "shut off" {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("still {state} after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn virsh_program() -> PathBuf {
    crate::find_tool("virsh").unwrap_or_else(|| PathBuf::from("virsh"))
}

/// A defined domain, undefined with its store (`undefine --nvram`) on drop, after a
/// `destroy` if it runs.
#[derive(Debug)]
pub struct DefinedDomain {
    libvirt: Libvirt,
    name: String,
    uuid: String,
}

impl DefinedDomain {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its UUID, which `virsh` takes wherever it takes a name.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }
}

impl Drop for DefinedDomain {
    fn drop(&mut self) {
        let _ = self.libvirt.try_virsh(&["destroy", &self.uuid]);
        if let Err(e) = self.libvirt.try_virsh(&["undefine", "--nvram", &self.uuid]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A domain XML for tests: TCG (`<domain type='qemu'>`), q35, 256 MiB, firmware picked by
/// libvirt from the QEMU firmware descriptors (`<os firmware='efi'>`), the serial console
/// written to a file, and optionally a FAT disk (virtio) with a `startup.nsh`
/// ([`make_startup_disk`](crate::make_startup_disk)).
#[derive(Debug, Clone)]
pub struct DomainXml {
    /// Domain name (escaped in the XML).
    pub name: String,
    /// `<emulator>`: the QEMU 7.2 wrapper unless changed.
    pub emulator: PathBuf,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// `<firmware><feature name='secure-boot' enabled=…>` (None: not said).
    pub secure_boot: Option<bool>,
    /// `<firmware><feature name='enrolled-keys' enabled=…>` (None: not said).
    pub enrolled_keys: Option<bool>,
    /// The serial console's log file.
    pub serial_log: PathBuf,
    /// A raw disk image (virtio), e.g. a FAT disk with `startup.nsh`.
    pub disk: Option<PathBuf>,
    /// An explicit `<nvram [template=…]>PATH</nvram>` instead of libvirt's default path.
    pub nvram: Option<(PathBuf, Option<PathBuf>)>,
    /// An explicit `<loader readonly='yes' type='pflash'>` instead of `firmware='efi'`
    /// (libvirt 9.0 refuses a template with firmware autoselection).
    pub loader: Option<PathBuf>,
}

impl DomainXml {
    /// An OVMF domain whose firmware libvirt picks (`firmware='efi'`), without Secure Boot
    /// (so that the UEFI shell runs `startup.nsh`): Debian 12's `60-edk2-x86_64.json`,
    /// `OVMF_CODE_4M.fd` with the `OVMF_VARS_4M.fd` template.
    pub fn efi(name: &str, serial_log: &Path) -> Self {
        DomainXml {
            name: name.to_string(),
            emulator: Stack::Debian12.qemu("x86_64"),
            memory_mib: 256,
            secure_boot: Some(false),
            enrolled_keys: Some(false),
            serial_log: serial_log.to_path_buf(),
            disk: None,
            nvram: None,
            loader: None,
        }
    }

    /// The domain XML.
    pub fn to_xml(&self) -> String {
        let e = |p: &Path| xml_escape(&p.to_string_lossy());
        let mut features = String::new();
        for (name, on) in [
            ("secure-boot", self.secure_boot),
            ("enrolled-keys", self.enrolled_keys),
        ] {
            if let Some(on) = on {
                let on = if on { "yes" } else { "no" };
                features.push_str(&format!("      <feature enabled='{on}' name='{name}'/>\n"));
            }
        }
        let firmware = if self.loader.is_some() || features.is_empty() {
            String::new()
        } else {
            format!("    <firmware>\n{features}    </firmware>\n")
        };
        let nvram = match &self.nvram {
            None => String::new(),
            Some((path, None)) => format!("    <nvram>{}</nvram>\n", e(path)),
            Some((path, Some(template))) => format!(
                "    <nvram template='{}'>{}</nvram>\n",
                e(template),
                e(path)
            ),
        };
        let disk = match &self.disk {
            None => String::new(),
            Some(disk) => format!(
                "    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n      \
                 <source file='{}'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n",
                e(disk)
            ),
        };
        let log = e(&self.serial_log);
        let (os, loader) = match &self.loader {
            Some(code) => (
                "<os>".to_string(),
                format!(
                    "    <loader readonly='yes' type='pflash'>{}</loader>\n",
                    e(code)
                ),
            ),
            None => ("<os firmware='efi'>".to_string(), String::new()),
        };
        format!(
            "<domain type='qemu'>\n  <name>{name}</name>\n  <memory unit='MiB'>{mem}</memory>\n  \
             <vcpu>1</vcpu>\n  {os}\n    <type arch='x86_64' machine='q35'>hvm</type>\n\
             {firmware}{loader}{nvram}  </os>\n  <features><acpi/></features>\n  \
             <on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n  <devices>\n    \
             <emulator>{emulator}</emulator>\n{disk}    \
             <serial type='file'><source path='{log}'/></serial>\n    \
             <console type='file'><source path='{log}'/><target type='serial'/></console>\n  \
             </devices>\n</domain>\n",
            name = xml_escape(&self.name),
            mem = self.memory_mib,
            emulator = e(&self.emulator),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_xml() {
        assert_eq!(xml_escape("a<b>&'\"c"), "a&lt;b&gt;&amp;&apos;&quot;c");
    }

    #[test]
    fn names_are_unique() {
        assert_ne!(unique_name("x"), unique_name("x"));
    }
}
