//! `nvram firmware`: QEMU firmware descriptors; and the `--template` / `--firmware` choice
//! that `prepare` and `reset` share.

use super::out::message;
use anyhow::{anyhow, Context, Result};
use nvram::escape::terminal;
use nvram::firmware::{self, host_arch, Catalog, Criteria, Firmware, FirmwareChoice, FlashMode};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// List and show QEMU firmware descriptors (firmware.json) and what would be selected.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    List(ListArgs),
    Show(ShowArgs),
}

/// Descriptor directories: where to look instead of the standard places.
#[derive(Debug, Clone, clap::Args)]
pub struct Dirs {
    /// Read descriptors from DIR instead of /usr/share/qemu/firmware, /etc/qemu/firmware and
    /// $XDG_CONFIG_HOME/qemu/firmware (repeat it: later ones override same-named files).
    /// $NVRAM_FIRMWARE_DIRS (colon-separated) does the same.
    #[arg(long = "firmware-dir", value_name = "DIR")]
    dirs: Vec<PathBuf>,
}

impl Dirs {
    fn catalog(&self) -> Catalog {
        let catalog = if self.dirs.is_empty() {
            Catalog::load_default()
        } else {
            Catalog::load(&self.dirs)
        };
        for skipped in &catalog.skipped {
            message!(
                "nvram: warning: {}: skipped: {}",
                skipped.path.display(),
                skipped.reason
            );
        }
        catalog
    }
}

/// What the VM needs from its firmware (libvirt's autoselection criteria).
#[derive(Debug, Clone, clap::Args)]
pub struct Needs {
    /// QEMU target architecture [default: this host's, e.g. x86_64].
    #[arg(long)]
    arch: Option<String>,
    /// Machine type, e.g. pc-q35-7.2, matched against the descriptors' globs such as
    /// pc-q35-*. An alias such as q35, pc or virt is first resolved to the versioned type it
    /// stands for (pc-q35-7.2) by asking QEMU (`qemu-system-ARCH -machine help`), as libvirt
    /// does; versioned names are used as they are.
    #[arg(long)]
    machine: Option<String>,
    /// The QEMU binary that resolves a --machine alias [default: qemu-system-ARCH from
    /// $PATH].
    #[arg(long, value_name = "PATH")]
    qemu: Option<PathBuf>,
    /// A feature the firmware must have: secure-boot, enrolled-keys, requires-smm, acpi-s3,
    /// amd-sev, … (repeatable).
    #[arg(long = "feature", value_name = "FEATURE")]
    features: Vec<String>,
    /// A feature the firmware must not have, e.g. requires-smm for a VM without SMM
    /// (repeatable).
    #[arg(long = "no-feature", value_name = "FEATURE")]
    without_features: Vec<String>,
}

impl Needs {
    fn criteria(&self, base: Criteria) -> Result<Criteria> {
        let architecture = self
            .arch
            .clone()
            .or(base.architecture)
            .unwrap_or_else(|| host_arch().to_string());
        Ok(Criteria {
            machine: self.machine(&architecture)?,
            architecture: Some(architecture),
            features: self.features.clone(),
            without_features: self.without_features.clone(),
            ..base
        })
    }

    /// The versioned machine type for --machine: an alias is resolved by asking QEMU for
    /// `architecture` (or --qemu), with a note on stderr saying what it stands for.
    fn machine(&self, architecture: &str) -> Result<Option<String>> {
        let Some(machine) = &self.machine else {
            return Ok(None);
        };
        let resolved =
            firmware::resolve_machine_alias(architecture, machine, self.qemu.as_deref())?;
        if &resolved != machine {
            let binary = self
                .qemu
                .clone()
                .unwrap_or_else(|| firmware::qemu_binary(architecture));
            message!(
                "nvram: note: machine {machine} is {resolved} ({})",
                binary.display()
            );
        }
        Ok(Some(resolved))
    }
}

/// Where the varstore template comes from: a file, or a firmware descriptor.
#[derive(Debug, Clone, clap::Args)]
pub struct TemplateSource {
    /// The varstore template to instantiate, e.g. /usr/share/OVMF/OVMF_VARS_4M.fd.
    #[arg(long, value_name = "FILE", required_unless_present = "firmware", conflicts_with_all = ["firmware", "arch", "machine", "qemu", "features", "without_features", "dirs"])]
    template: Option<PathBuf>,
    /// Take the template from a QEMU firmware descriptor: `auto` selects the first one that
    /// fits --arch, --machine and --feature (UEFI, split flash, raw), or give a descriptor's
    /// file name (e.g. 60-edk2-x86_64.json).
    #[arg(long, value_name = "auto|NAME", value_parser = descriptor_arg)]
    firmware: Option<DescriptorArg>,
    /// The template's format: with --template it must be in it; with --firmware auto only
    /// descriptors whose images have it are considered (default raw, as QEMU and libvirt).
    /// The VM's store is kept in the template's format unless --format says otherwise.
    #[arg(long, value_name = "FORMAT")]
    template_format: Option<TemplateFormat>,
    #[command(flatten)]
    needs: Needs,
    #[command(flatten)]
    dirs: Dirs,
}

/// `--firmware auto|NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DescriptorArg {
    /// The first descriptor that fits.
    Auto,
    /// A descriptor's file name.
    Named(String),
}

fn descriptor_arg(text: &str) -> Result<DescriptorArg, std::convert::Infallible> {
    Ok(match text {
        "auto" => DescriptorArg::Auto,
        name => DescriptorArg::Named(name.to_string()),
    })
}

/// `--template-format`: the formats a template image may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TemplateFormat {
    /// A raw flash image.
    Raw,
    /// A qcow2 image.
    Qcow2,
}

impl From<TemplateFormat> for nvram::container::Format {
    fn from(f: TemplateFormat) -> Self {
        match f {
            TemplateFormat::Raw => Self::Raw,
            TemplateFormat::Qcow2 => Self::Qcow2,
        }
    }
}

/// The template chosen, and the descriptor it came from.
pub struct Chosen {
    pub template: PathBuf,
    /// The format the template must have (--template-format, or the descriptor's).
    pub template_format: Option<nvram::container::Format>,
    pub firmware: Option<Firmware>,
    /// The versioned machine type the descriptor was selected for (--machine, resolved).
    pub machine: Option<String>,
}

impl Chosen {
    /// The `firmware` field of a JSON report: [`firmware_json`], or null without a descriptor.
    pub fn firmware_json(&self) -> serde_json::Value {
        self.firmware
            .as_ref()
            .map(firmware_json)
            .unwrap_or_default()
    }
}

impl TemplateSource {
    pub fn resolve(&self) -> Result<Chosen> {
        let format = self.template_format.map(nvram::container::Format::from);
        let Some(descriptor) = &self.firmware else {
            let template = self.template.clone().expect("clap requires --template");
            return Ok(Chosen {
                template,
                template_format: format,
                firmware: None,
                machine: None,
            });
        };
        let (choice, machine) = if let DescriptorArg::Named(name) = descriptor {
            (FirmwareChoice::Named(name.clone()), None)
        } else {
            // Resolve the machine type first: an unknown one fails before anything is read.
            let wanted = format.unwrap_or(nvram::container::Format::Raw);
            let criteria = self
                .needs
                .criteria(Criteria::uefi_varstore_in(host_arch(), wanted.as_str()))?;
            let machine = criteria.machine.clone();
            (FirmwareChoice::Auto(criteria), machine)
        };
        let chosen = self.dirs.catalog().template(&choice, format)?;
        Ok(Chosen {
            template: chosen.template,
            template_format: Some(chosen.format),
            firmware: Some(chosen.firmware),
            machine,
        })
    }
}

/// JSON for a chosen descriptor, as `prepare` and `reset` report it.
pub fn firmware_json(firmware: &Firmware) -> serde_json::Value {
    serde_json::json!({
        "name": firmware.name,
        "path": firmware.path,
        "description": firmware.descriptor.description,
        "executable": firmware.flash().map(|f| &f.executable),
        "nvram-template": firmware.nvram_template(),
        "features": firmware.descriptor.features,
    })
}

/// `--mode` of `firmware list`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Split,
    Combined,
    Stateless,
}

impl From<ModeArg> for FlashMode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Split => FlashMode::Split,
            ModeArg::Combined => FlashMode::Combined,
            ModeArg::Stateless => FlashMode::Stateless,
        }
    }
}

/// List descriptors in priority order (the first that fits is the one selected).
#[derive(Debug, clap::Args)]
struct ListArgs {
    #[command(flatten)]
    needs: Needs,
    /// Only this interface (uefi, bios, …); with any filter, uefi is the default.
    #[arg(long)]
    interface: Option<String>,
    /// Only this flash mode.
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    #[command(flatten)]
    dirs: Dirs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Show one descriptor as installed (unknown members included).
#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// Its file name, e.g. 60-edk2-x86_64.json (.json may be left out).
    name: String,
    #[command(flatten)]
    dirs: Dirs,
    /// Print JSON with the path (the descriptor alone otherwise).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Command::List(args) => list(args),
        Command::Show(args) => show(args),
    }
}

fn list(args: ListArgs) -> Result<ExitCode> {
    let n = &args.needs;
    // The global --format: firmware whose images have this format.
    let format = nvram::container::default_format().map(|f| f.as_str().to_string());
    // Without --arch, an alias is resolved by the host's QEMU.
    let machine = n.machine(n.arch.as_deref().unwrap_or(host_arch()))?;
    let catalog = args.dirs.catalog();
    let criteria = Criteria {
        interface: args.interface.clone(),
        architecture: n.arch.clone(),
        machine,
        mode: args.mode.map(FlashMode::from),
        format,
        features: n.features.clone(),
        without_features: n.without_features.clone(),
    }
    .for_listing();
    let shown: Vec<&Firmware> = catalog.matching(&criteria).collect();
    let mut out = String::new();
    if args.json {
        let doc = serde_json::json!({
            "dirs": catalog.dirs,
            "criteria": criteria.to_string(),
            "firmware": shown,
            "skipped": catalog.skipped,
        });
        out = nvram::escape::to_json_pretty(&doc)? + "\n";
    } else {
        // Descriptors are input files: their text is escaped, and aligned as printed.
        let names: Vec<_> = shown.iter().map(|f| terminal(&f.name)).collect();
        let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        for (f, name) in shown.iter().zip(&names) {
            let d = &f.descriptor;
            let targets: Vec<String> = d
                .targets
                .iter()
                .map(|t| format!("{}:{}", t.architecture, t.machines.join(",")))
                .collect();
            let _ = writeln!(
                out,
                "{name:<width$}  {:<5} {:<16} {:<36} {}",
                terminal(&d.interface_types.join(",")),
                terminal(&f.mapping_summary()),
                terminal(&targets.join(" ")),
                terminal(&d.features.join(","))
            );
        }
        if shown.is_empty() {
            message!(
                "nvram: no firmware descriptor fits ({criteria}) in {}",
                catalog
                    .dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if args.json {
        super::emit(None, false, out.as_bytes())?;
    } else {
        super::out::text(&out)?;
    }
    Ok(if shown.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn show(args: ShowArgs) -> Result<ExitCode> {
    let catalog = args.dirs.catalog();
    let firmware = catalog.by_name(&args.name).ok_or_else(|| {
        anyhow!(firmware::FirmwareError::NotFound {
            name: args.name.clone(),
            dirs: catalog.dirs.clone(),
        })
    })?;
    let doc = if args.json {
        serde_json::json!({ "name": firmware.name, "path": firmware.path, "descriptor": firmware.raw })
    } else {
        message!("{}", firmware.path.display());
        firmware.raw.clone()
    };
    let out = nvram::escape::to_json_pretty(&doc).context("cannot format the descriptor")? + "\n";
    super::emit(None, false, out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
