//! Machine-type aliases (`q35`, `pc`, `virt`): resolved to the versioned machine type QEMU
//! says they stand for, as libvirt does before matching descriptors.

use std::path::{Path, PathBuf};

/// QEMU's target name for an architecture name, normalized as QEMU's `configure` does for
/// host CPUs and as Debian names them: `amd64` → `x86_64`, `i686` → `i386`, `arm64` →
/// `aarch64`, `armv7l`/`armhf` → `arm`, `ppc64le` → `ppc64`, … Target names (`x86_64`,
/// `aarch64`, `riscv64`, …) are returned unchanged. The binary is `qemu-system-<target>`.
pub fn qemu_target(architecture: &str) -> &str {
    match architecture {
        "amd64" | "x64" | "x86-64" => "x86_64",
        "i486" | "i586" | "i686" | "i86pc" | "x86" => "i386",
        "arm64" => "aarch64",
        "armhf" | "armel" => "arm",
        a if a.starts_with("armv") && (a.ends_with('l') || a.ends_with('b')) => "arm",
        "ppc64le" | "ppc64el" | "powerpc64" | "powerpc64le" => "ppc64",
        "powerpc" => "ppc",
        other => other,
    }
}

/// The QEMU binary for `architecture`, looked up in `$PATH`: `qemu-system-x86_64`, …
pub fn qemu_binary(architecture: &str) -> PathBuf {
    PathBuf::from(format!("qemu-system-{}", qemu_target(architecture)))
}

/// Whether `machine` is a versioned machine type (`pc-q35-7.2`, `pc-i440fx-7.2`, `virt-7.2`,
/// `pc-q35-4.0.1`): a name, a dash and a dotted version. Such names are used as they are;
/// anything else (`q35`, `virt`, `microvm`) is looked up in QEMU's list.
pub fn is_versioned_machine(machine: &str) -> bool {
    machine.rsplit_once('-').is_some_and(|(name, version)| {
        !name.is_empty()
            && version.contains('.')
            && version
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The aliases in the text of `qemu-system-ARCH -machine help`, as `(alias, machine type)`
/// pairs in the order listed. QEMU prints an alias on a line of its own just before the
/// machine type it stands for:
///
/// ```text
/// Supported machines are:
/// q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)
/// pc-q35-7.2           Standard PC (Q35 + ICH9, 2009)
/// ```
///
/// ```
/// let help = "Supported machines are:\n\
///             virt                 QEMU 7.2 ARM Virtual Machine (alias of virt-7.2)\n\
///             virt-7.2             QEMU 7.2 ARM Virtual Machine\n";
/// assert_eq!(
///     nvram::firmware::parse_machine_aliases(help),
///     [("virt".to_string(), "virt-7.2".to_string())]
/// );
/// ```
pub fn parse_machine_aliases(help_text: &str) -> Vec<(String, String)> {
    machine_lines(help_text)
        .filter_map(|(name, rest)| {
            let target = rest.strip_suffix(')')?.rsplit_once("(alias of ")?.1.trim();
            (!target.is_empty() && !target.contains(char::is_whitespace))
                .then(|| (name.to_string(), target.to_string()))
        })
        .collect()
}

/// Every name in the text of `qemu-system-ARCH -machine help`, aliases included, in the
/// order listed.
pub fn parse_machine_names(help_text: &str) -> Vec<String> {
    machine_lines(help_text)
        .map(|(name, _)| name.to_string())
        .collect()
}

/// `(name, description)` of each machine line: `%-20s %s` after the header.
fn machine_lines(help_text: &str) -> impl Iterator<Item = (&str, &str)> {
    help_text
        .lines()
        .filter(|line| !line.starts_with(char::is_whitespace) && !line.ends_with(':'))
        .filter_map(|line| {
            let line = line.trim_end();
            let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            (!name.is_empty()).then_some((name, rest.trim_start()))
        })
}

/// Why `qemu -machine help` gave no list of machine types.
#[derive(Debug, thiserror::Error)]
pub enum QemuFailure {
    /// The binary could not be started.
    #[error(transparent)]
    Spawn(#[from] std::io::Error),
    /// It ran and failed.
    #[error(
        "`-machine help` failed ({status}){}",
        first_line.as_ref().map_or(String::new(), |l| format!(": {l}"))
    )]
    Failed {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The first line it wrote on stderr.
        first_line: Option<String>,
    },
}

/// Runs `binary -machine help` and returns what it printed, or why it could not.
fn machine_help(binary: &Path) -> Result<String, QemuFailure> {
    let output = std::process::Command::new(binary)
        .args(["-machine", "help"])
        .stdin(std::process::Stdio::null())
        .output()?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(QemuFailure::Failed {
            status: output.status,
            first_line: stderr
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_string),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The versioned machine type that `machine` stands for, as libvirt canonicalizes it: a
/// versioned name (see [`is_versioned_machine`]) is returned as it is without running
/// anything; otherwise `qemu` (default [`qemu_binary`]`(architecture)`, from `$PATH`) is
/// asked with `-machine help`, and an alias (`q35`, `pc`, `virt`) becomes the type it is an
/// alias of (`pc-q35-7.2`), a machine type that is no alias (`microvm`) stays as it is, and
/// a name QEMU does not know is an error.
pub fn resolve_machine_alias(
    architecture: &str,
    machine: &str,
    qemu: Option<&Path>,
) -> Result<String, MachineError> {
    if is_versioned_machine(machine) {
        return Ok(machine.to_string());
    }
    let binary = qemu.map_or_else(|| qemu_binary(architecture), Path::to_path_buf);
    let help = machine_help(&binary).map_err(|reason| MachineError::QemuUnavailable {
        machine: machine.to_string(),
        binary: binary.clone(),
        reason,
    })?;
    let aliases = parse_machine_aliases(&help);
    if let Some((_, target)) = aliases.iter().find(|(alias, _)| alias == machine) {
        return Ok(target.clone());
    }
    if parse_machine_names(&help)
        .iter()
        .any(|name| name == machine)
    {
        return Ok(machine.to_string());
    }
    Err(MachineError::Unknown {
        machine: machine.to_string(),
        binary,
        aliases,
    })
}

/// A machine type could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// QEMU could not be run, or failed, while resolving an alias.
    #[error(
        "cannot resolve machine type {machine:?}: cannot run {}: {reason}; give the versioned \
         machine type instead ({}, as `{} -machine help` lists it)",
        binary.display(),
        versioned_hint(machine),
        binary.display()
    )]
    QemuUnavailable {
        /// The machine type asked for.
        machine: String,
        /// The QEMU binary.
        binary: PathBuf,
        /// Why it could not be run, or how it failed.
        #[source]
        reason: QemuFailure,
    },
    /// QEMU has no machine type or alias of that name.
    #[error(
        "{} has no machine type {machine:?} (`{} -machine help` lists them){}",
        binary.display(),
        binary.display(),
        display_aliases(aliases)
    )]
    Unknown {
        /// The machine type asked for.
        machine: String,
        /// The QEMU binary asked.
        binary: PathBuf,
        /// The aliases it has, `(alias, machine type)`.
        aliases: Vec<(String, String)>,
    },
}

/// What the versioned form of `machine` looks like, for error messages.
fn versioned_hint(machine: &str) -> String {
    let base = match machine {
        "q35" => "pc-q35",
        "pc" => "pc-i440fx",
        "virt" => "virt",
        _ => return "e.g. pc-q35-7.2 or virt-7.2".into(),
    };
    format!("{base}-VERSION for {machine}, e.g. {base}-7.2")
}

fn display_aliases(aliases: &[(String, String)]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let list: Vec<String> = aliases.iter().map(|(a, t)| format!("{a} = {t}")).collect();
    format!("; its aliases: {}", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `qemu-system-x86_64 -machine help` of Debian 12's QEMU 7.2 (1:7.2+dfsg-7+deb12u18),
    /// as printed.
    const X86_64_HELP: &str = r#"Supported machines are:
microvm              microvm (i386)
pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)
pc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)
pc-i440fx-7.1        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-7.0        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-6.2        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-6.1        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-6.0        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-5.2        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-5.1        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-5.0        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-4.2        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-4.1        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-4.0        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-3.1        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-3.0        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.9        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.8        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.7        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.6        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.5        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.4        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.3        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.2        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.12       Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.11       Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.10       Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.1        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-2.0        Standard PC (i440FX + PIIX, 1996)
pc-i440fx-1.7        Standard PC (i440FX + PIIX, 1996) (deprecated)
pc-i440fx-1.6        Standard PC (i440FX + PIIX, 1996) (deprecated)
pc-i440fx-1.5        Standard PC (i440FX + PIIX, 1996) (deprecated)
pc-i440fx-1.4        Standard PC (i440FX + PIIX, 1996) (deprecated)
q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)
pc-q35-7.2           Standard PC (Q35 + ICH9, 2009)
pc-q35-7.1           Standard PC (Q35 + ICH9, 2009)
pc-q35-7.0           Standard PC (Q35 + ICH9, 2009)
pc-q35-6.2           Standard PC (Q35 + ICH9, 2009)
pc-q35-6.1           Standard PC (Q35 + ICH9, 2009)
pc-q35-6.0           Standard PC (Q35 + ICH9, 2009)
pc-q35-5.2           Standard PC (Q35 + ICH9, 2009)
pc-q35-5.1           Standard PC (Q35 + ICH9, 2009)
pc-q35-5.0           Standard PC (Q35 + ICH9, 2009)
pc-q35-4.2           Standard PC (Q35 + ICH9, 2009)
pc-q35-4.1           Standard PC (Q35 + ICH9, 2009)
pc-q35-4.0.1         Standard PC (Q35 + ICH9, 2009)
pc-q35-4.0           Standard PC (Q35 + ICH9, 2009)
pc-q35-3.1           Standard PC (Q35 + ICH9, 2009)
pc-q35-3.0           Standard PC (Q35 + ICH9, 2009)
pc-q35-2.9           Standard PC (Q35 + ICH9, 2009)
pc-q35-2.8           Standard PC (Q35 + ICH9, 2009)
pc-q35-2.7           Standard PC (Q35 + ICH9, 2009)
pc-q35-2.6           Standard PC (Q35 + ICH9, 2009)
pc-q35-2.5           Standard PC (Q35 + ICH9, 2009)
pc-q35-2.4           Standard PC (Q35 + ICH9, 2009)
pc-q35-2.12          Standard PC (Q35 + ICH9, 2009)
pc-q35-2.11          Standard PC (Q35 + ICH9, 2009)
pc-q35-2.10          Standard PC (Q35 + ICH9, 2009)
isapc                ISA-only PC
none                 empty machine
x-remote             Experimental remote machine
"#;

    /// `qemu-system-aarch64 -machine help` of the same QEMU, as printed.
    const AARCH64_HELP: &str = r#"Supported machines are:
akita                Sharp SL-C1000 (Akita) PDA (PXA270)
ast1030-evb          Aspeed AST1030 MiniBMC (Cortex-M4)
ast2500-evb          Aspeed AST2500 EVB (ARM1176)
ast2600-evb          Aspeed AST2600 EVB (Cortex-A7)
bletchley-bmc        Facebook Bletchley BMC (Cortex-A7)
borzoi               Sharp SL-C3100 (Borzoi) PDA (PXA270)
canon-a1100          Canon PowerShot A1100 IS (ARM946)
cheetah              Palm Tungsten|E aka. Cheetah PDA (OMAP310)
collie               Sharp SL-5500 (Collie) PDA (SA-1110)
connex               Gumstix Connex (PXA255)
cubieboard           cubietech cubieboard (Cortex-A8)
emcraft-sf2          SmartFusion2 SOM kit from Emcraft (M2S010)
fby35-bmc            Facebook fby35 BMC (Cortex-A7)
fby35                Meta Platforms fby35
fp5280g2-bmc         Inspur FP5280G2 BMC (ARM1176)
fuji-bmc             Facebook Fuji BMC (Cortex-A7)
g220a-bmc            Bytedance G220A BMC (ARM1176)
highbank             Calxeda Highbank (ECX-1000)
imx25-pdk            ARM i.MX25 PDK board (ARM926)
integratorcp         ARM Integrator/CP (ARM926EJ-S)
kudo-bmc             Kudo BMC (Cortex-A9)
kzm                  ARM KZM Emulation Baseboard (ARM1136)
lm3s6965evb          Stellaris LM3S6965EVB (Cortex-M3)
lm3s811evb           Stellaris LM3S811EVB (Cortex-M3)
mainstone            Mainstone II (PXA27x)
mcimx6ul-evk         Freescale i.MX6UL Evaluation Kit (Cortex-A7)
mcimx7d-sabre        Freescale i.MX7 DUAL SABRE (Cortex-A7)
microbit             BBC micro:bit (Cortex-M0)
midway               Calxeda Midway (ECX-2000)
mori-bmc             Mori BMC (Cortex-A9)
mps2-an385           ARM MPS2 with AN385 FPGA image for Cortex-M3
mps2-an386           ARM MPS2 with AN386 FPGA image for Cortex-M4
mps2-an500           ARM MPS2 with AN500 FPGA image for Cortex-M7
mps2-an505           ARM MPS2 with AN505 FPGA image for Cortex-M33
mps2-an511           ARM MPS2 with AN511 DesignStart FPGA image for Cortex-M3
mps2-an521           ARM MPS2 with AN521 FPGA image for dual Cortex-M33
mps3-an524           ARM MPS3 with AN524 FPGA image for dual Cortex-M33
mps3-an547           ARM MPS3 with AN547 FPGA image for Cortex-M55
musca-a              ARM Musca-A board (dual Cortex-M33)
musca-b1             ARM Musca-B1 board (dual Cortex-M33)
musicpal             Marvell 88w8618 / MusicPal (ARM926EJ-S)
n800                 Nokia N800 tablet aka. RX-34 (OMAP2420)
n810                 Nokia N810 tablet aka. RX-44 (OMAP2420)
netduino2            Netduino 2 Machine (Cortex-M3)
netduinoplus2        Netduino Plus 2 Machine (Cortex-M4)
none                 empty machine
npcm750-evb          Nuvoton NPCM750 Evaluation Board (Cortex-A9)
nuri                 Samsung NURI board (Exynos4210)
orangepi-pc          Orange Pi PC (Cortex-A7)
palmetto-bmc         OpenPOWER Palmetto BMC (ARM926EJ-S)
qcom-dc-scm-v1-bmc   Qualcomm DC-SCM V1 BMC (Cortex A7)
qcom-firework-bmc    Qualcomm DC-SCM V1/Firework BMC (Cortex A7)
quanta-gbs-bmc       Quanta GBS (Cortex-A9)
quanta-gsj           Quanta GSJ (Cortex-A9)
quanta-q71l-bmc      Quanta-Q71l BMC (ARM926EJ-S)
rainier-bmc          IBM Rainier BMC (Cortex-A7)
raspi0               Raspberry Pi Zero (revision 1.2)
raspi1ap             Raspberry Pi A+ (revision 1.1)
raspi2b              Raspberry Pi 2B (revision 1.1)
raspi3ap             Raspberry Pi 3A+ (revision 1.0)
raspi3b              Raspberry Pi 3B (revision 1.2)
realview-eb          ARM RealView Emulation Baseboard (ARM926EJ-S)
realview-eb-mpcore   ARM RealView Emulation Baseboard (ARM11MPCore)
realview-pb-a8       ARM RealView Platform Baseboard for Cortex-A8
realview-pbx-a9      ARM RealView Platform Baseboard Explore for Cortex-A9
romulus-bmc          OpenPOWER Romulus BMC (ARM1176)
sabrelite            Freescale i.MX6 Quad SABRE Lite Board (Cortex-A9)
sbsa-ref             QEMU 'SBSA Reference' ARM Virtual Machine
smdkc210             Samsung SMDKC210 board (Exynos4210)
sonorapass-bmc       OCP SonoraPass BMC (ARM1176)
spitz                Sharp SL-C3000 (Spitz) PDA (PXA270)
stm32vldiscovery     ST STM32VLDISCOVERY (Cortex-M3)
supermicrox11-bmc    Supermicro X11 BMC (ARM926EJ-S)
sx1                  Siemens SX1 (OMAP310) V2
sx1-v1               Siemens SX1 (OMAP310) V1
tacoma-bmc           OpenPOWER Tacoma BMC (Cortex-A7)
terrier              Sharp SL-C3200 (Terrier) PDA (PXA270)
tosa                 Sharp SL-6000 (Tosa) PDA (PXA255)
verdex               Gumstix Verdex (PXA270)
versatileab          ARM Versatile/AB (ARM926EJ-S)
versatilepb          ARM Versatile/PB (ARM926EJ-S)
vexpress-a15         ARM Versatile Express for Cortex-A15
vexpress-a9          ARM Versatile Express for Cortex-A9
virt-2.10            QEMU 2.10 ARM Virtual Machine
virt-2.11            QEMU 2.11 ARM Virtual Machine
virt-2.12            QEMU 2.12 ARM Virtual Machine
virt-2.6             QEMU 2.6 ARM Virtual Machine
virt-2.7             QEMU 2.7 ARM Virtual Machine
virt-2.8             QEMU 2.8 ARM Virtual Machine
virt-2.9             QEMU 2.9 ARM Virtual Machine
virt-3.0             QEMU 3.0 ARM Virtual Machine
virt-3.1             QEMU 3.1 ARM Virtual Machine
virt-4.0             QEMU 4.0 ARM Virtual Machine
virt-4.1             QEMU 4.1 ARM Virtual Machine
virt-4.2             QEMU 4.2 ARM Virtual Machine
virt-5.0             QEMU 5.0 ARM Virtual Machine
virt-5.1             QEMU 5.1 ARM Virtual Machine
virt-5.2             QEMU 5.2 ARM Virtual Machine
virt-6.0             QEMU 6.0 ARM Virtual Machine
virt-6.1             QEMU 6.1 ARM Virtual Machine
virt-6.2             QEMU 6.2 ARM Virtual Machine
virt-7.0             QEMU 7.0 ARM Virtual Machine
virt-7.1             QEMU 7.1 ARM Virtual Machine
virt                 QEMU 7.2 ARM Virtual Machine (alias of virt-7.2)
virt-7.2             QEMU 7.2 ARM Virtual Machine
witherspoon-bmc      OpenPOWER Witherspoon BMC (ARM1176)
xilinx-zynq-a9       Xilinx Zynq Platform Baseboard for Cortex-A9
xlnx-versal-virt     Xilinx Versal Virtual development board
xlnx-zcu102          Xilinx ZynqMP ZCU102 board with 4xA53s and 2xR5Fs based on the value of smp
z2                   Zipit Z2 (PXA27x)
"#;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, t)| (a.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn aliases_are_parsed_from_real_qemu_output() {
        assert_eq!(
            parse_machine_aliases(X86_64_HELP),
            pairs(&[("pc", "pc-i440fx-7.2"), ("q35", "pc-q35-7.2")])
        );
        assert_eq!(
            parse_machine_aliases(AARCH64_HELP),
            pairs(&[("virt", "virt-7.2")])
        );
        let names = parse_machine_names(X86_64_HELP);
        assert_eq!(names.len(), 61, "every line but the header");
        assert_eq!(names[0], "microvm");
        assert!(names.iter().any(|n| n == "pc-q35-4.0.1"));
        assert!(names.iter().any(|n| n == "q35"));
        assert!(!names.iter().any(|n| n == "Supported"));
        let names = parse_machine_names(AARCH64_HELP);
        assert_eq!(names.len(), 110);
        // Names longer than the 20-column field, descriptions with parentheses.
        assert!(names.iter().any(|n| n == "xlnx-versal-virt"));
        assert!(names.iter().any(|n| n == "sbsa-ref"));
    }

    #[test]
    fn alias_parsing_tolerates_odd_lines() {
        let text = "Supported machines are:\n\
                    a-very-long-machine-name-beyond-twenty Some board (alias of long-1.0)\n\
                    x                    Thing (Foo) (deprecated)\n\
                    \n\
                    y                    Trailing spaces (alias of y-2.0)   \n\
                    z                    Broken (alias of )\n\
                    w                    Not an alias (alias of two words)\n";
        assert_eq!(
            parse_machine_aliases(text),
            pairs(&[
                ("a-very-long-machine-name-beyond-twenty", "long-1.0"),
                ("y", "y-2.0")
            ])
        );
        assert_eq!(
            parse_machine_names(text),
            ["a-very-long-machine-name-beyond-twenty", "x", "y", "z", "w"]
        );
        assert!(parse_machine_aliases("").is_empty());
    }

    #[test]
    fn versioned_machine_types_are_recognized() {
        for name in [
            "pc-q35-7.2",
            "pc-i440fx-7.2",
            "virt-7.2",
            "pc-q35-4.0.1",
            "pc-q35-10.0",
            "pc-1.0",
            "s390-ccw-virtio-7.2",
            "pseries-7.2",
        ] {
            assert!(is_versioned_machine(name), "{name}");
        }
        for name in [
            "q35",
            "pc",
            "virt",
            "microvm",
            "sbsa-ref",
            "mps2-an385",
            "virt-",
            "-7.2",
            "virt-7",
            "virt-7.",
            "virt-7.x",
            "virt-.2",
            "",
        ] {
            assert!(!is_versioned_machine(name), "{name}");
        }
    }

    #[test]
    fn architecture_names_map_to_qemu_targets() {
        for (arch, target) in [
            ("x86_64", "x86_64"),
            ("amd64", "x86_64"),
            ("i386", "i386"),
            ("i686", "i386"),
            ("aarch64", "aarch64"),
            ("arm64", "aarch64"),
            ("arm", "arm"),
            ("armv7l", "arm"),
            ("armhf", "arm"),
            ("ppc64le", "ppc64"),
            ("powerpc64", "ppc64"),
            ("riscv64", "riscv64"),
            ("loongarch64", "loongarch64"),
        ] {
            assert_eq!(qemu_target(arch), target, "{arch}");
        }
        assert_eq!(qemu_binary("amd64"), Path::new("qemu-system-x86_64"));
    }

    #[test]
    fn versioned_names_are_not_looked_up_and_a_missing_qemu_is_a_clear_error() {
        let missing = Path::new("/nonexistent/qemu-system-x86_64");
        assert_eq!(
            resolve_machine_alias("x86_64", "pc-q35-7.2", Some(missing)).unwrap(),
            "pc-q35-7.2"
        );
        let e = resolve_machine_alias("x86_64", "q35", Some(missing)).unwrap_err();
        assert!(matches!(e, MachineError::QemuUnavailable { .. }), "{e:?}");
        let message = e.to_string();
        for needle in ["\"q35\"", "/nonexistent/qemu-system-x86_64", "pc-q35-7.2"] {
            assert!(message.contains(needle), "{needle:?} missing: {message}");
        }
    }
}
