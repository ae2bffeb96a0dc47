use super::args::{DistroArg, GuidParser, MicrosoftArg, StrategyArg};
use super::out::message;
use anyhow::{bail, Context, Result};
use nvram::apply::{apply_all, FileResult, Plan, Status, Step, Summary};
use nvram::escape::terminal;
use nvram::secureboot::EnrollPlan;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use varstore::edit::Strategy;

/// Apply the same edit to many stores in parallel (a fleet of VMs).
///
/// Edits, applied to each file in this order, all or nothing per file: the Secure Boot
/// enrolment (--enroll-pk …), the template upgrade (--upgrade-template), the Secure Boot additions (--add-kek/--add-db/--add-dbx/
/// --add-microsoft/--add-microsoft-dbx/--add-distro), every --import (in the order given), then every --set, then
/// every --delete. At least one is required.
///
///   --set NAME[@GUID][:ATTRS]=KIND:VALUE   e.g. Timeout=u16:5, PlatformLang=ascii:en,
///       MyVar@4a67b082-0a4c-41cf-b6c7-440b29bb8c4f:nv,bs=hex:0102. KIND is what
///       `nvram set` takes as a flag: hex (data-hex), file (data-file), string, ascii, u8,
///       u16, u32. GUID defaults to EfiGlobalVariable, ATTRS to nv,bs,rt.
///   --delete NAME[@GUID]   a variable that is not there counts as done (unchanged).
///   --import FILE.json     as `nvram import`; with --replace-all as `nvram import --replace-all`.
///   --enroll-pk CERT [--enroll-kek CERT]… [--enroll-db CERT]… [--enroll-dbx FILE]
///       [--enroll-microsoft 2011|2023|all] [--enroll-distro debian|redhat|ubuntu] [--enroll-owner GUID]
///                          as `nvram secureboot enroll --pk CERT --kek CERT …`.
///   --add-kek CERT… --add-db CERT… --add-dbx FILE… --add-microsoft 2011|2023|all
///       --add-microsoft-dbx 2011|2023|all --add-distro debian|redhat|ubuntu [--add-owner GUID]
///                          as `nvram secureboot add-kek/add-db/add-dbx`: adds what is
///                          missing, keeps every entry. The Microsoft 2023 rollout of a
///                          fleet is `nvram apply --add-microsoft 2023 --dir DIR`.
///   --upgrade-template TEMPLATE [--replace-pk]
///                          as `nvram upgrade --template TEMPLATE`: the template's KEK and
///                          db entries each store lacks added, dbx the union, every other
///                          variable kept; a PK differing from the template's kept unless
///                          --replace-pk. The template is read once for all files.
///
/// Files: the FILE arguments, the lines of --files-from LIST (- for stdin) and the *.fd,
/// *.qcow2 and *.json files of --dir DIR, in that order, each once (raw, qcow2 and JSON stores
/// alike, each kept in its format). Each file is locked, edited on a copy and replaced
/// atomically (fsync'ed) on its own: one bad file never stops or damages the others.
/// With --libvirt (--domain NAME… or --all; --connect URI), the stores of libvirt's domains
/// instead: a running domain's store is skipped and reported (never edited), as is one that
/// libvirt has not created yet; each line names the domain.
///
/// Output: one line per file on stdout, `RESULT FILE: DETAIL`, RESULT being changed,
/// unchanged (the edit was already in effect; not written), skipped (locked by a running VM
/// or another tool; not touched), changed-not-durable (changed, but the fsync of the
/// directory after the rename failed: a host crash may bring the old content back) or failed
/// (not touched); with --dry-run, would-change
/// instead of changed, and no file is written; a summary on stderr. With --json,
/// stdout is a JSON array of {"file", "result", "detail"}. A progress bar is drawn on stderr
/// when it is a terminal.
///
/// Exit status: 0 when no file failed (skipped files do not count, so a fleet with running
/// VMs can be edited and the run repeated later; with --strict they do); 1 when some failed;
/// 2 on bad arguments (then no file is touched); 3 when none failed but some are
/// changed-not-durable.
#[derive(Debug, clap::Args)]
#[command(
    group(clap::ArgGroup::new("edits").required(true).multiple(true)),
    verbatim_doc_comment
)]
pub struct Args {
    /// Create or replace a variable: NAME[@GUID][:ATTRS]=KIND:VALUE (repeatable).
    #[arg(long, value_name = "NAME[@GUID][:ATTRS]=KIND:VALUE", group = "edits", value_parser = super::args::set_step)]
    set: Vec<Step>,
    /// Delete a variable if present: NAME[@GUID] (repeatable).
    #[arg(long, value_name = "NAME[@GUID]", group = "edits", value_parser = super::args::delete_step)]
    delete: Vec<Step>,
    /// Import a JSON variable list as `nvram import` does (repeatable).
    #[arg(long, value_name = "FILE", group = "edits")]
    import: Vec<PathBuf>,
    /// With --import: also delete the live variables the lists do not name.
    #[arg(long, requires = "import")]
    replace_all: bool,
    /// How to write the changes.
    #[arg(long, value_enum, default_value = "append")]
    strategy: StrategyArg,
    /// Files edited at the same time. Default: the number of CPUs.
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<std::num::NonZeroUsize>,
    /// Print the results as a JSON array.
    #[arg(long)]
    json: bool,
    /// Count locked (skipped) files as failures in the exit status.
    #[arg(long)]
    strict: bool,
    /// Read file names from LIST, one per line (- for stdin; empty lines are ignored).
    #[arg(long, value_name = "LIST", conflicts_with = "libvirt")]
    files_from: Vec<PathBuf>,
    /// Write nothing: report for each file whether the edit would change it (would-change),
    /// is already in effect (unchanged), or cannot be done (skipped, failed).
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Edit every *.fd, *.qcow2 and *.json file in DIR (not recursive).
    #[arg(long, value_name = "DIR", conflicts_with = "libvirt")]
    dir: Vec<PathBuf>,
    /// The stores.
    #[arg(conflicts_with = "libvirt")]
    files: Vec<PathBuf>,
    /// Give each store this template's Secure Boot databases, keeping its own variables, as
    /// `nvram upgrade --template` does.
    #[arg(long, value_name = "TEMPLATE", group = "edits")]
    upgrade_template: Option<PathBuf>,
    /// With --upgrade-template: take the template's PK where a store's differs or is missing.
    #[arg(long, requires = "upgrade_template")]
    replace_pk: bool,
    #[command(flatten)]
    enroll: EnrollArgs,
    #[command(flatten)]
    add: AddArgs,
    #[command(flatten)]
    shim: ShimArgs,
    #[command(flatten)]
    libvirt: super::vms::LibvirtArgs,
}

/// The options of `nvram secureboot add-kek/add-db/add-dbx` with an `add-` prefix.
#[derive(Debug, clap::Args)]
#[command(
    next_help_heading = "Secure Boot additions (as `nvram secureboot add-kek/add-db/add-dbx`)"
)]
struct AddArgs {
    /// Add a KEK certificate or list, keeping the entries there (repeatable).
    #[arg(long, value_name = "CERT", group = "edits")]
    add_kek: Vec<PathBuf>,
    /// Add a db certificate or list, keeping the entries there (repeatable).
    #[arg(long, value_name = "CERT", group = "edits")]
    add_db: Vec<PathBuf>,
    /// Add dbx entries from a signature list or .auth file (repeatable).
    #[arg(long, value_name = "FILE", group = "edits")]
    add_dbx: Vec<PathBuf>,
    /// Add Microsoft's missing KEK and db certificates (2011, 2023 or all): the 2023 rollout
    /// is --add-microsoft 2023.
    #[arg(long, value_name = "WHICH", group = "edits", value_enum)]
    add_microsoft: Option<MicrosoftArg>,
    /// Add Microsoft's dbx updates (signed with the 2011 KEK, the 2023 KEK, or all) for each
    /// store's architecture (x86_64 or aarch64; riscv64 and loongarch64 stores are refused).
    #[arg(long, value_name = "WHICH", group = "edits", value_enum)]
    add_microsoft_dbx: Option<MicrosoftArg>,
    /// Add a distribution's CA certificate to db (repeatable).
    #[arg(long, value_name = "DISTRO", group = "edits", value_enum)]
    add_distro: Vec<DistroArg>,
    /// Add a certificate to shim's MokList, keeping the entries there (repeatable).
    #[arg(long, value_name = "CERT", group = "edits")]
    add_mok: Vec<PathBuf>,
    /// Add a bare SHA-256 hash (64 hex digits) to db (repeatable).
    #[arg(long, value_name = "SHA256", group = "edits", value_parser = super::args::sha256)]
    add_db_hash: Vec<[u8; 32]>,
    /// Add a bare SHA-256 hash to dbx: revoke an image (repeatable).
    #[arg(long, value_name = "SHA256", group = "edits", value_parser = super::args::sha256)]
    add_dbx_hash: Vec<[u8; 32]>,
    /// Add a bare SHA-256 hash to shim's MokList (repeatable).
    #[arg(long, value_name = "SHA256", group = "edits", value_parser = super::args::sha256)]
    add_mok_hash: Vec<[u8; 32]>,
    /// Owner GUID of the certificates and hashes given with --add-kek/--add-db/--add-dbx/
    /// --add-mok and --add-*-hash (default: a0baa8a3-…).
    #[arg(long, value_name = "GUID", value_parser = GuidParser)]
    add_owner: Option<varstore::Guid>,
}

/// The options of `nvram shim set` and `nvram shim sbat-level` with a `shim-` prefix.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "shim (as `nvram shim set/sbat-level`)")]
struct ShimArgs {
    /// Turn a shim or fallback switch on: debug, verbose, fallback-verbose,
    /// fallback-no-reboot (repeatable).
    #[arg(long, value_name = "SWITCH", group = "edits", value_enum)]
    shim_on: Vec<super::shim::SettingArg>,
    /// Turn a shim or fallback switch off (the variable is deleted; repeatable).
    #[arg(long, value_name = "SWITCH", group = "edits", value_enum)]
    shim_off: Vec<super::shim::SettingArg>,
    /// Set shim's SbatLevel to the content of this file.
    #[arg(long, value_name = "FILE", group = "edits")]
    shim_sbat_level: Option<PathBuf>,
}

impl ShimArgs {
    fn steps(&self) -> Result<Vec<Step>> {
        let mut steps = Vec::new();
        for (settings, on) in [(&self.shim_on, true), (&self.shim_off, false)] {
            for s in settings {
                steps.push(Step::Shim {
                    setting: (*s).into(),
                    on,
                });
            }
        }
        if let Some(path) = &self.shim_sbat_level {
            let level = nvram::shim::read_sbat_level(path).context("--shim-sbat-level")?;
            steps.push(Step::SbatLevel(level));
        }
        Ok(steps)
    }
}

impl AddArgs {
    /// One step per database that gets something (KEK, then db, then dbx); the files are
    /// read once, here, for all stores.
    fn steps(&self) -> Result<Vec<Step>> {
        use nvram::secureboot::{read_input, Addition, Database, Distro};
        let microsoft = self.add_microsoft.map(Into::into);
        let owner = self
            .add_owner
            .unwrap_or(varstore::secureboot::OVMF_ENROLL_DEFAULT_KEYS);
        let read = |flag: &str, paths: &[PathBuf]| -> Result<Vec<_>> {
            paths
                .iter()
                .map(|p| read_input(p).with_context(|| format!("--add-{flag} {}", p.display())))
                .collect()
        };
        let distro: Vec<Distro> = self.add_distro.iter().copied().map(Distro::from).collect();
        let microsoft_dbx = self.add_microsoft_dbx.map(Into::into);
        let mut steps = Vec::new();
        for (database, inputs, microsoft, distro, hashes) in [
            (
                Database::Kek,
                read("kek", &self.add_kek)?,
                microsoft,
                Vec::new(),
                Vec::new(),
            ),
            (
                Database::Db,
                read("db", &self.add_db)?,
                microsoft,
                distro,
                self.add_db_hash.clone(),
            ),
            (
                Database::Dbx,
                read("dbx", &self.add_dbx)?,
                microsoft_dbx,
                Vec::new(),
                self.add_dbx_hash.clone(),
            ),
            (
                Database::Mok,
                read("mok", &self.add_mok)?,
                None,
                Vec::new(),
                self.add_mok_hash.clone(),
            ),
        ] {
            let addition = Addition {
                inputs,
                microsoft,
                distro,
                hashes,
                owner,
                ..Addition::to(database)
            };
            if !addition.is_empty() {
                steps.push(Step::AddSignatures(Box::new(addition)));
            }
        }
        Ok(steps)
    }
}

/// The options of `nvram secureboot enroll` with an `enroll-` prefix.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Secure Boot enrolment (as `nvram secureboot enroll`)")]
struct EnrollArgs {
    /// Enrol Secure Boot keys with this platform key certificate (PEM or DER).
    #[arg(long, value_name = "CERT", group = "edits")]
    enroll_pk: Option<PathBuf>,
    /// With --enroll-pk: a KEK certificate or list (repeatable).
    #[arg(long, value_name = "CERT", requires = "enroll_pk")]
    enroll_kek: Vec<PathBuf>,
    /// With --enroll-pk: a db certificate or list (repeatable).
    #[arg(long, value_name = "CERT", requires = "enroll_pk")]
    enroll_db: Vec<PathBuf>,
    /// With --enroll-pk: dbx as signature list or .auth file. Default: the dummy entry
    /// virt-firmware enrols.
    #[arg(long, value_name = "FILE", requires = "enroll_pk")]
    enroll_dbx: Option<PathBuf>,
    /// With --enroll-pk: also enrol Microsoft's KEK and db certificates (2011, 2023 or all).
    #[arg(long, value_name = "WHICH", requires = "enroll_pk", value_enum)]
    enroll_microsoft: Option<MicrosoftArg>,
    /// With --enroll-pk: also enrol a distribution's db certificate (repeatable).
    #[arg(long, value_name = "DISTRO", requires = "enroll_pk", value_enum)]
    enroll_distro: Vec<DistroArg>,
    /// With --enroll-pk: owner GUID of the certificates given (default: a0baa8a3-…).
    #[arg(long, value_name = "GUID", requires = "enroll_pk", value_parser = GuidParser)]
    enroll_owner: Option<varstore::Guid>,
}

impl EnrollArgs {
    /// The enrolment, if asked for; certificates are read once, here, for all files.
    fn plan(&self, strategy: Strategy) -> Result<Option<EnrollPlan>> {
        use nvram::secureboot::{read_input, Distro};
        let Some(pk) = &self.enroll_pk else {
            return Ok(None);
        };
        let read = |flag: &str, path: &Path| {
            read_input(path).with_context(|| format!("--enroll-{flag} {}", path.display()))
        };
        let pk = read("pk", pk)?;
        let inputs = super::secureboot::EnrollInputs {
            kek: &self.enroll_kek,
            db: &self.enroll_db,
            dbx: self.enroll_dbx.as_deref(),
            microsoft: self.enroll_microsoft.map(Into::into),
            microsoft_db: None,
            distro: self
                .enroll_distro
                .iter()
                .copied()
                .map(Distro::from)
                .collect(),
            owner: self.enroll_owner,
            strategy,
        };
        let plan = inputs.plan(pk, read)?;
        Ok(Some(plan))
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let plan = plan_of(&args)?;
    nvram::apply::preflight(&plan).context("the edit cannot work on any store")?;
    let jobs = args
        .jobs
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, std::num::NonZeroUsize::get);
    if args.libvirt.libvirt {
        let targets = args.libvirt.targets()?;
        if targets.is_empty() {
            bail!("no libvirt domain with a UEFI varstore to edit");
        }
        let progress = Progress::new(targets.len());
        let named = nvram::libvirt::apply_targets(&targets, &plan, jobs, &|r: &FileResult| {
            if let Some(p) = &progress {
                p.done(r.status);
            }
        });
        if let Some(p) = &progress {
            p.clear();
        }
        let report = super::vms::report(&named, args.json)?;
        let results: Vec<FileResult> = named.into_iter().map(|(_, r)| r).collect();
        return finish(&args, &results, &report);
    }
    let files = files_of(&args)?;
    if files.is_empty() {
        bail!("no files to edit (give FILEs, --files-from or --dir)");
    }
    let progress = Progress::new(files.len());
    let results = apply_all(&files, &plan, jobs, &|r: &FileResult| {
        if let Some(p) = &progress {
            p.done(r.status);
        }
    });
    if let Some(p) = &progress {
        p.clear();
    }
    // The files are edited: failing to print the report does not change the status.
    let report = if args.json {
        nvram::escape::to_json_pretty(&results)? + "\n"
    } else {
        let mut text = String::new();
        for r in &results {
            // File names (from --dir, --files-from) and details (variable names) are input.
            let _ = writeln!(
                text,
                "{} {}: {}",
                r.status,
                terminal(&r.file.to_string_lossy()),
                terminal(&r.detail)
            );
        }
        text
    };
    finish(&args, &results, &report)
}

/// Prints the report (failing to print does not change the status: the files are edited),
/// the summary, and gives the exit status.
fn finish(args: &Args, results: &[FileResult], report: &str) -> Result<ExitCode> {
    super::out::report(report);
    let summary = Summary::of(results);
    let (changed, verb) = if args.dry_run {
        (
            summary.would_change,
            "would change (dry run, nothing written)",
        )
    } else {
        (summary.changed, "changed")
    };
    let late = match summary.not_durable {
        0 => String::new(),
        n => format!(", {n} changed but not durable (directory fsync failed)"),
    };
    message!(
        "nvram: {} {}: {changed} {verb}{late}, {} unchanged, {} skipped ({}), {} failed",
        summary.total(),
        if args.libvirt.libvirt {
            "domains"
        } else {
            "files"
        },
        summary.unchanged,
        summary.skipped,
        if args.libvirt.libvirt {
            "running, locked or not created yet"
        } else {
            "locked"
        },
        summary.failed
    );
    Ok(exit_status(&summary, args.strict))
}

/// The exit status of a run over many stores: 1 when some failed (or, `strict`, was
/// skipped), else 3 when some change is not durable, else 0.
pub(super) fn exit_status(summary: &Summary, strict: bool) -> ExitCode {
    if summary.failed > 0 || (strict && summary.skipped > 0) {
        ExitCode::from(1)
    } else if summary.not_durable > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

/// Builds the plan; every argument problem is found here, before any file is touched.
fn plan_of(args: &Args) -> Result<Plan> {
    let strategy = Strategy::from(args.strategy);
    let mut steps = Vec::new();
    if let Some(enrolment) = args.enroll.plan(strategy)? {
        steps.push(Step::Enroll(Box::new(enrolment)));
    }
    if let Some(template) = &args.upgrade_template {
        let template = super::upgrade::load_template(template).context("--upgrade-template")?;
        steps.push(Step::Upgrade {
            template: Box::new(template),
            replace_pk: args.replace_pk,
        });
    }
    steps.extend(args.add.steps()?);
    steps.extend(args.shim.steps()?);
    for path in &args.import {
        let text = safefile::read_input(
            path,
            safefile::Accept::RegularFile,
            nvram::edit::MAX_IMPORT_JSON_LEN,
            nvram::edit::IMPORT_JSON_WHAT,
        )
        .context("--import")?;
        let list = varstore::json::VariableList::from_json(&text)
            .with_context(|| format!("{}: cannot import", path.display()))?;
        steps.push(Step::Import {
            list,
            replace_all: args.replace_all,
            label: path.display().to_string(),
        });
    }
    steps.extend(args.set.iter().cloned());
    steps.extend(args.delete.iter().cloned());
    Ok(Plan {
        steps,
        strategy,
        dry_run: args.dry_run,
    })
}

/// The files of all sources, in order, each path once (the same file twice would find its
/// own lock and be reported as skipped).
fn files_of(args: &Args) -> Result<Vec<PathBuf>> {
    use nvram::apply::{FILE_LIST_WHAT, MAX_FILE_LIST_LEN};
    let mut files = args.files.clone();
    for list in &args.files_from {
        let text = if list == Path::new("-") {
            safefile::read_bounded(
                std::io::stdin().lock(),
                list,
                MAX_FILE_LIST_LEN,
                FILE_LIST_WHAT,
            )
        } else {
            safefile::read_input(
                list,
                safefile::Accept::RegularFile,
                MAX_FILE_LIST_LEN,
                FILE_LIST_WHAT,
            )
        }
        .context("--files-from")?;
        files.extend(nvram::apply::parse_file_list(&text));
    }
    for dir in &args.dir {
        let found = nvram::apply::stores_in_dir(dir)
            .with_context(|| format!("--dir: cannot list {}", dir.display()))?;
        files.extend(found);
    }
    nvram::apply::dedup_files(&mut files);
    Ok(files)
}

/// The progress bar on stderr: only when stderr is a terminal (a log or a pipe gets only the
/// summary), redrawn at most ten times a second, counting the failed and skipped files.
struct Progress {
    bar: indicatif::ProgressBar,
    failed: AtomicUsize,
    skipped: AtomicUsize,
}

impl Progress {
    fn new(total: usize) -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let target = indicatif::ProgressDrawTarget::stderr_with_hz(10);
        let bar = indicatif::ProgressBar::with_draw_target(Some(total as u64), target);
        let style = indicatif::ProgressStyle::with_template("[{bar:30}] {pos}/{len} files, {msg}")
            .expect("a valid template")
            .progress_chars("## ");
        bar.set_style(style);
        bar.set_message("0 failed, 0 skipped");
        Some(Self {
            bar,
            failed: AtomicUsize::new(0),
            skipped: AtomicUsize::new(0),
        })
    }

    fn done(&self, status: Status) {
        match status {
            Status::Failed => self.failed.fetch_add(1, Ordering::Relaxed),
            Status::Skipped => self.skipped.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        self.bar.set_message(format!(
            "{} failed, {} skipped",
            self.failed.load(Ordering::Relaxed),
            self.skipped.load(Ordering::Relaxed)
        ));
        self.bar.inc(1);
    }

    fn clear(&self) {
        self.bar.finish_and_clear();
    }
}
