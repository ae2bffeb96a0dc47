//! `nvram boot`: list, add, reorder and remove boot entries (Boot####, BootOrder, BootNext).

use super::args::StrategyArg;
use super::out::message;
use super::set::{json_report, note_free_space};
use super::Loaded;
use anyhow::{anyhow, bail, Result};
use nvram::edit::{changes, ChangedVariable, EditFileError, Snapshot};
use nvram::escape::terminal;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use varstore::boot::{self, BootConfig, BootError, LoadOptionSpec, Placement};
use varstore::edit::{Editor, Strategy};

/// List, add, reorder and remove boot entries (Boot####, BootOrder, BootNext).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: BootCommand,
}

#[derive(Debug, clap::Subcommand)]
enum BootCommand {
    List(ListArgs),
    Add(AddArgs),
    Order(OrderArgs),
    Remove(RemoveArgs),
}

/// List the boot entries in BootOrder order, then those not in it.
#[derive(Debug, clap::Args)]
struct ListArgs {
    /// The store.
    file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Add a boot entry with the lowest free Boot#### number (active, no optional data).
///
/// Device paths are short-form, which the firmware expands at boot: `HD(…)/File(…)` is matched
/// to the disk by partition GUID, a bare `File(…)` is tried on every file system, a bare
/// `Uri(…)` is handed to the network boot drivers.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true)))]
#[command(group(clap::ArgGroup::new("position")))]
struct AddArgs {
    /// The store.
    file: PathBuf,
    /// Description shown in boot menus.
    #[arg(long)]
    description: String,
    /// Path of the EFI binary on the ESP, e.g. '\EFI\debian\shimx64.efi' (`/` works too).
    #[arg(long = "file", group = "target", value_name = "PATH")]
    file_path: Option<String>,
    /// GPT partition holding --file: UNIQUE-PARTITION-GUID/NUMBER (e.g. from `sgdisk -i`).
    /// Without it the firmware looks for the file on every file system.
    #[arg(
        long,
        requires = "file_path",
        conflicts_with = "uri",
        value_name = "GUID/NUMBER",
        value_parser = super::args::partition
    )]
    partition: Option<super::args::Partition>,
    /// HTTP(S) boot URL.
    #[arg(long, group = "target", value_name = "URL")]
    uri: Option<String>,
    /// Put it first in BootOrder (default: last).
    #[arg(long, group = "position")]
    first: bool,
    /// Boot it once at the next boot (BootNext); it is also appended to BootOrder.
    #[arg(long, group = "position")]
    next: bool,
    /// How to write the change.
    #[arg(long, value_enum, default_value = "append")]
    strategy: StrategyArg,
    /// Print a JSON report of what changed on stdout (README, "JSON output of changing
    /// commands") instead of the text.
    #[arg(long)]
    json: bool,
}

/// Replace BootOrder; every listed entry must exist.
#[derive(Debug, clap::Args)]
struct OrderArgs {
    /// The store.
    file: PathBuf,
    /// Entry numbers, comma-separated, e.g. 0003,0001.
    #[arg(value_parser = super::args::boot_order)]
    order: super::args::BootOrder,
    /// How to write the change.
    #[arg(long, value_enum, default_value = "append")]
    strategy: StrategyArg,
    /// Print a JSON report of what changed on stdout (README, "JSON output of changing
    /// commands") instead of the text.
    #[arg(long)]
    json: bool,
}

/// Delete a boot entry and drop it from BootOrder (and BootNext).
#[derive(Debug, clap::Args)]
struct RemoveArgs {
    /// The store.
    file: PathBuf,
    /// Entry number, e.g. 0004.
    #[arg(value_parser = super::args::boot_number)]
    number: u16,
    /// How to write the change.
    #[arg(long, value_enum, default_value = "append")]
    strategy: StrategyArg,
    /// Print a JSON report of what changed on stdout (README, "JSON output of changing
    /// commands") instead of the text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        BootCommand::List(a) => list(a),
        BootCommand::Add(a) => add(a),
        BootCommand::Order(a) => order(a),
        BootCommand::Remove(a) => remove(a),
    }
}

/// Runs a boot edit on the locked file, also saying (with `json`) what happened to each
/// variable: the ones `named` after the edit's value first, then any other that changed.
fn edit_reporting<T>(
    file: &std::path::Path,
    json: bool,
    op: impl FnOnce(&mut Editor) -> Result<T, BootError>,
    named: impl FnOnce(&T) -> Vec<String>,
) -> Result<(nvram::edit::Edited<T>, Vec<ChangedVariable>), EditFileError<BootError>> {
    let mut variables = Vec::new();
    let edited = nvram::edit::edit_file(file, |editor| {
        let before = json.then(|| Snapshot::of(editor)).transpose()?;
        let value = op(editor)?;
        if let Some(before) = before {
            let after = Snapshot::of(editor)?;
            let named: Vec<_> = named(&value)
                .into_iter()
                .map(|n| (n, varstore::guid::EFI_GLOBAL_VARIABLE))
                .collect();
            variables = changes(&before, &after, &named);
        }
        Ok(value)
    })?;
    Ok((edited, variables))
}

fn list(args: ListArgs) -> Result<ExitCode> {
    let loaded = Loaded::read(&args.file)?;
    let config = match loaded.parse()? {
        Some(store) => {
            BootConfig::read(&store).map_err(|e| anyhow!("{}: {e}", args.file.display()))?
        }
        None => BootConfig::default(),
    };
    let shown = config.in_boot_order();
    let mut out = String::new();
    if args.json {
        let entries: Vec<serde_json::Value> = shown
            .iter()
            .map(|e| {
                let o = e.option.as_ref().ok();
                serde_json::json!({
                    "number": format!("{:04X}", e.number),
                    "in_order": config.in_order(e.number),
                    "attributes": o.map(|o| o.attributes),
                    "active": o.map(|o| o.attributes & varstore::decode::LoadOption::ACTIVE != 0),
                    "description": o.map(|o| o.description.clone()),
                    "device_path": o.map(|o| o.device_path.clone()),
                    "optional_data": o.map(|o| hex::encode(&o.optional_data)),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "file": args.file,
            "boot_order": config.order.iter().map(|n| format!("{n:04X}")).collect::<Vec<_>>(),
            "boot_next": config.next.map(|n| format!("{n:04X}")),
            "entries": entries,
        });
        out = nvram::escape::to_json_pretty(&doc)? + "\n";
    } else {
        let order: Vec<String> = config.order.iter().map(|n| format!("{n:04X}")).collect();
        let _ = writeln!(out, "BootOrder: {}", order.join(","));
        if let Some(n) = config.next {
            let _ = writeln!(out, "BootNext: {n:04X}");
        }
        for e in shown {
            let mark = if config.next == Some(e.number) {
                '>'
            } else if config.in_order(e.number) {
                '*'
            } else {
                ' '
            };
            let line = match &e.option {
                Ok(o) => {
                    let inactive = if o.attributes & varstore::decode::LoadOption::ACTIVE == 0 {
                        " [inactive]"
                    } else {
                        ""
                    };
                    format!(
                        "{mark} Boot{:04X}  \"{}\"  {}{inactive}",
                        e.number,
                        terminal(&o.description),
                        terminal(&o.device_path)
                    )
                }
                Err(error) => format!(
                    "{mark} Boot{:04X}  <malformed load option: {}>",
                    e.number,
                    terminal(&error.to_string())
                ),
            };
            let _ = writeln!(out, "{line}");
        }
        for n in config.missing_from_order() {
            let _ = writeln!(out, "! Boot{n:04X}  <in BootOrder but missing>");
        }
    }
    if args.json {
        super::emit(None, false, out.as_bytes())?;
    } else {
        super::out::text(&out)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn add(args: AddArgs) -> Result<ExitCode> {
    let path = if let Some(file) = &args.file_path {
        let mut nodes = Vec::new();
        if let Some(p) = args.partition {
            // Start and size 0: edk2 matches the partition by its GUID alone (see
            // varstore::boot), and reading them would need the disk.
            nodes.push(boot::hard_drive_gpt(p.number, p.guid, 0, 0));
        }
        nodes.push(boot::file_path(file)?);
        boot::device_path(&nodes)
    } else if let Some(u) = &args.uri {
        boot::device_path(&[boot::uri(u)?])
    } else {
        bail!("--file or --uri is required");
    };
    let spec = LoadOptionSpec::new(&args.description, path);
    spec.to_bytes()?;
    let placement = if args.first {
        Placement::First
    } else if args.next {
        Placement::Next
    } else {
        Placement::Last
    };
    let strategy = Strategy::from(args.strategy);
    let (edited, variables) = edit_reporting(
        &args.file,
        args.json,
        |editor| boot::add(editor, &spec, placement, strategy),
        |n| {
            let mut named = vec![format!("Boot{n:04X}"), "BootOrder".to_string()];
            if args.next {
                named.push("BootNext".to_string());
            }
            named
        },
    )?;
    if args.json {
        json_report(
            &args.file,
            &edited,
            serde_json::json!({
                "number": format!("{:04X}", edited.value),
                "description": args.description,
                "variables": variables,
            }),
        );
        return Ok(ExitCode::SUCCESS);
    }
    super::out::report(&format!("Boot{:04X}\n", edited.value));
    message!(
        "{}: added Boot{:04X} \"{}\"",
        args.file.display(),
        edited.value,
        terminal(&args.description)
    );
    note_free_space(&edited);
    Ok(ExitCode::SUCCESS)
}

fn order(args: OrderArgs) -> Result<ExitCode> {
    let order = &args.order.0;
    let strategy = Strategy::from(args.strategy);
    let (edited, variables) = edit_reporting(
        &args.file,
        args.json,
        |editor| boot::set_order(editor, order, strategy),
        |_| vec!["BootOrder".to_string()],
    )?;
    let text: Vec<String> = order.iter().map(|n| format!("{n:04X}")).collect();
    if args.json {
        json_report(
            &args.file,
            &edited,
            serde_json::json!({ "boot_order": text, "variables": variables }),
        );
        return Ok(ExitCode::SUCCESS);
    }
    let what = if edited.written { "set" } else { "unchanged" };
    message!(
        "{}: BootOrder {what}: {}",
        args.file.display(),
        text.join(",")
    );
    note_free_space(&edited);
    Ok(ExitCode::SUCCESS)
}

fn remove(args: RemoveArgs) -> Result<ExitCode> {
    let n = args.number;
    let strategy = Strategy::from(args.strategy);
    let (edited, variables) = edit_reporting(
        &args.file,
        args.json,
        |editor| boot::remove(editor, n, strategy),
        |_| vec![format!("Boot{n:04X}"), "BootOrder".to_string()],
    )?;
    if args.json {
        json_report(
            &args.file,
            &edited,
            serde_json::json!({ "number": format!("{n:04X}"), "variables": variables }),
        );
        return Ok(ExitCode::SUCCESS);
    }
    message!("{}: removed Boot{n:04X}", args.file.display());
    note_free_space(&edited);
    Ok(ExitCode::SUCCESS)
}
