//! `nvram upgrade`: give an existing VM's store a newer template's Secure Boot databases.

use super::firmware::TemplateSource;
use super::out::message;
use anyhow::{bail, Context, Result};
use nvram::escape::terminal;
use nvram::upgrade::{upgrade_with, TemplateDatabases, UpgradeOptions};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Give a VM's store the Secure Boot databases of a newer template, keeping the VM's own
/// variables.
///
/// KEK and db get the template's entries they lack (appended, with the template's owner
/// GUIDs; the VM's entries stay, in order) and dbx becomes the union of both: nothing of the
/// VM's is removed. Every other variable (Boot####, BootOrder, BootNext, shim's MOK state,
/// SecureBootEnable, …) is left byte for byte. A PK that differs from the template's, or a
/// missing one (setup mode), is kept and reported unless --replace-pk. dbt and dbr are not
/// merged (reported when the template's differ). Running it again changes nothing.
///
/// Prints one line per Secure Boot variable: its name, what happened (added, replaced,
/// unchanged, kept) and why. Exit status: 0 done (or nothing to do), 2 an error (the file is
/// unchanged), 3 written but the directory's fsync failed.
///
/// With --libvirt (--domain NAME… or --all) instead of --nvram: the stores of libvirt's
/// domains, one line each as `nvram apply` prints them; running domains are skipped and
/// reported, never edited; exit status 1 when a store failed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VM's varstore.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "libvirt",
        conflicts_with = "libvirt"
    )]
    nvram: Option<PathBuf>,
    #[command(flatten)]
    source: TemplateSource,
    /// Take the template's PK where the VM's differs or the VM has none (setup mode:
    /// enrolling a PK turns Secure Boot on at the next boot).
    #[arg(long)]
    replace_pk: bool,
    /// Write nothing: report what would change.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    libvirt: super::vms::LibvirtArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let chosen = args.source.resolve()?;
    let template = load_template(&chosen.template)?;
    let Some(nvram) = args.nvram.clone() else {
        return run_libvirt(&args, template);
    };
    let args = Single { nvram, args };
    let options = UpgradeOptions {
        replace_pk: args.replace_pk,
        ..UpgradeOptions::default()
    };
    let edited = nvram::edit::edit_file_with(&args.nvram, !args.dry_run, |editor| {
        upgrade_with(editor, &template, &options)
    })
    .with_context(|| {
        format!(
            "cannot upgrade {} from {}",
            args.nvram.display(),
            chosen.template.display()
        )
    })?;
    if edited.written && !args.dry_run {
        // What killed writers left next to the file goes once this edit has succeeded.
        nvram::files::clean_after_write(&args.nvram);
    }
    let report = &edited.value;
    if args.json {
        let mut doc = serde_json::to_value(report)?;
        doc["file"] = serde_json::json!(args.nvram);
        doc["template"] = serde_json::json!(chosen.template);
        doc["dry_run"] = serde_json::json!(args.dry_run);
        doc["written"] = serde_json::json!(edited.written && !args.dry_run);
        doc["firmware"] = chosen.firmware_json();
        super::out::report(&(nvram::escape::to_json_pretty(&doc)? + "\n"));
    } else {
        let mut text = String::new();
        for v in &report.variables {
            let _ = writeln!(text, "{}: {}: {}", v.name, v.change, terminal(&v.why));
            for entry in &v.added {
                let _ = writeln!(
                    text,
                    "  + {} {} (owner {})",
                    entry.signature_type,
                    terminal(&entry.description),
                    entry.owner
                );
            }
        }
        super::out::report(&text);
        let file = terminal(&args.nvram.to_string_lossy()).into_owned();
        let from = terminal(&chosen.template.to_string_lossy()).into_owned();
        let kept = report.kept_variables;
        match (report.changed, args.dry_run) {
            (true, true) => message!(
                "{file}: would be upgraded from {from} (dry run, nothing written); its {kept} \
                 other variables kept"
            ),
            (true, false) => {
                message!("{file}: upgraded from {from}; its {kept} other variables kept")
            }
            (false, _) => message!("{file}: unchanged: it has what {from} has"),
        }
        if report.pk_kept {
            message!(
                "nvram: note: the PK is the VM's own and was kept; --replace-pk takes the \
                 template's"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `upgrade --nvram PATH`: the path, with the other arguments.
struct Single {
    nvram: PathBuf,
    args: Args,
}

impl std::ops::Deref for Single {
    type Target = Args;
    fn deref(&self) -> &Args {
        &self.args
    }
}

/// `upgrade --libvirt`: every store of the domains asked for, as `apply --upgrade-template`
/// does (one line per domain; running domains skipped). Exit status as `apply`'s: 1 when some
/// store failed, 3 when none failed but some change is not durable.
fn run_libvirt(args: &Args, template: TemplateDatabases) -> Result<ExitCode> {
    use nvram::apply::{Plan, Step, Summary};
    let targets = args.libvirt.targets()?;
    if targets.is_empty() {
        bail!("no libvirt domain with a UEFI varstore to upgrade");
    }
    let plan = Plan {
        steps: vec![Step::Upgrade {
            template: Box::new(template),
            replace_pk: args.replace_pk,
        }],
        strategy: varstore::edit::Strategy::Append,
        dry_run: args.dry_run,
    };
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let named = nvram::libvirt::apply_targets(&targets, &plan, jobs, &|_| {});
    super::out::report(&super::vms::report(&named, args.json)?);
    let results: Vec<_> = named.into_iter().map(|(_, r)| r).collect();
    let summary = Summary::of(&results);
    message!(
        "nvram: {} domains: {} {}, {} unchanged, {} skipped, {} failed",
        summary.total(),
        summary.changed + summary.not_durable + summary.would_change,
        if args.dry_run {
            "would change"
        } else {
            "upgraded"
        },
        summary.unchanged,
        summary.skipped,
        summary.failed
    );
    Ok(super::apply::exit_status(&summary, false))
}

/// Reads the template and its Secure Boot databases, once.
pub(super) fn load_template(path: &Path) -> Result<TemplateDatabases> {
    let databases = TemplateDatabases::load(path)?;
    if databases.is_empty() {
        message!(
            "nvram: note: {}: the template has no Secure Boot databases (PK, KEK, db, dbx)",
            terminal(&path.to_string_lossy())
        );
    }
    Ok(databases)
}
