use super::args::{DistroArg, GuidParser, MicrosoftArg, MicrosoftDbArg, StrategyArg};
use super::out::message;
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use nvram::certs::SignatureInput;
use nvram::secureboot::{self as sb, Database, Distro, EnrollPlan, Microsoft, MicrosoftDb, Status};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use varstore::edit::Strategy;
use varstore::guid::{self, Guid};
use varstore::secureboot::OVMF_ENROLL_DEFAULT_KEYS;

/// Enrol Secure Boot keys, add to the signature databases, show the Secure Boot state.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Enroll(EnrollArgs),
    Status(StatusArgs),
    AddKek(AddArgs),
    AddDb(AddArgs),
    AddDbx(AddDbxArgs),
    AddMok(AddArgs),
    Hashes(HashesArgs),
    ExtractCerts(ExtractArgs),
    SignUpdate(super::sign_update::SignUpdateArgs),
    ExportAuth(super::sign_update::ExportAuthArgs),
}

/// Enrol PK, KEK, db and dbx, and turn Secure Boot on (SecureBootEnable=1, CustomMode=0).
///
/// Replaces PK, KEK, db and dbx. Certificates may be PEM or DER; KEK/db/dbx also take EFI
/// signature lists and .auth files (the authentication header is skipped, its time used).
/// Timestamps follow virt-firmware: the newest certificate's notBefore, 2010-01-01 for the
/// dummy dbx, never earlier than before.
#[derive(Debug, clap::Args)]
struct EnrollArgs {
    /// The store.
    file: PathBuf,
    /// The platform key certificate.
    #[arg(
        long,
        value_name = "CERT",
        required_unless_present_any = ["generate_pk", "external_management", "platform"]
    )]
    pk: Option<PathBuf>,
    /// A vendor's platform key instead (virt-fw-vars' --enroll-redhat, --enroll-microsoft):
    /// redhat puts Red Hat's 2014 PK/KEK certificate into PK and KEK; microsoft puts
    /// Microsoft's OEM devices PK (2023, owned by Microsoft's GUID) into PK.
    #[arg(long, value_enum, conflicts_with_all = ["pk", "generate_pk", "external_management"])]
    platform: Option<PlatformArg>,
    /// No platform key of our own: the PK holds the external-management entry (owned by
    /// a0baa8a3-…), saying that the keys are managed from outside (virt-fw-vars'
    /// --enroll-mgmt).
    #[arg(long, conflicts_with_all = ["pk", "generate_pk"])]
    external_management: bool,
    /// Generate the platform key instead: RSA-2048 with a self-signed SHA-256 certificate,
    /// subject CN=<CN>, valid for ten years. The private key (PKCS#8 PEM) and the certificate
    /// (PEM) are written as new owner-only files FILE.pk.key and FILE.pk.crt, or see
    /// --pk-key-out.
    #[arg(long, value_name = "CN", conflicts_with = "pk")]
    generate_pk: Option<String>,
    /// Where --generate-pk writes the private key; the certificate goes next to it, the
    /// extension replaced by .crt.
    #[arg(long, value_name = "PATH", requires = "generate_pk")]
    pk_key_out: Option<PathBuf>,
    /// A KEK certificate or list (repeatable).
    #[arg(long, value_name = "CERT")]
    kek: Vec<PathBuf>,
    /// A db certificate or list (repeatable).
    #[arg(long, value_name = "CERT")]
    db: Vec<PathBuf>,
    /// dbx as signature list or .auth file. Default: the dummy entry virt-firmware enrols
    /// (SHA-256 of nothing).
    #[arg(long, value_name = "FILE")]
    dbx: Option<PathBuf>,
    /// Also enrol Microsoft's KEK and db certificates.
    #[arg(long, value_enum)]
    microsoft: Option<MicrosoftArg>,
    /// Microsoft's db certificates by virt-firmware's profile instead of those of
    /// --microsoft (which then chooses the KEK only).
    #[arg(long, value_enum, value_name = "PROFILE")]
    microsoft_db: Option<MicrosoftDbArg>,
    /// Also enrol a distribution's db certificate (repeatable).
    #[arg(long, value_enum)]
    distro: Vec<DistroArg>,
    /// Owner GUID of the certificates given (default: a0baa8a3-…, OVMF's and virt-firmware's).
    #[arg(long, value_name = "GUID", value_parser = GuidParser)]
    owner: Option<Guid>,
    /// How to write the changes.
    #[arg(long, value_enum, default_value = "append")]
    strategy: StrategyArg,
    /// Print a JSON report of what changed on stdout (README, "JSON output of changing
    /// commands") instead of the lines on stderr.
    #[arg(long)]
    json: bool,
}

/// A vendor platform key bundled with nvram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PlatformArg {
    /// Red Hat Secure Boot (PK/KEK key 1), 2014: into PK and KEK.
    Redhat,
    /// Microsoft Windows OEM Devices PK, 2023: into PK.
    Microsoft,
}

/// Show whether Secure Boot will be on, the databases and Microsoft's 2011/2023 certificates.
#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// The store.
    file: PathBuf,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Add certificates, lists or .auth files to the database, keeping what is there (no
/// duplicates).
#[derive(Debug, clap::Args)]
struct AddArgs {
    /// The store.
    file: PathBuf,
    /// Certificates (PEM/DER), signature lists or .auth files.
    inputs: Vec<PathBuf>,
    /// Add Microsoft's certificates for this database that are missing; for dbx, Microsoft's
    /// dbx updates signed with that year's KEK (for the store's architecture: x86_64 for
    /// OVMF, aarch64 for AAVMF; Microsoft publishes none for riscv64 or loongarch64).
    #[arg(long, value_enum)]
    microsoft: Option<MicrosoftArg>,
    /// Add a distribution's CA certificate (add-db only; repeatable).
    #[arg(long, value_enum)]
    distro: Vec<DistroArg>,
    /// Add Microsoft's db certificates of virt-firmware's profile (add-db only).
    #[arg(long, value_enum, value_name = "PROFILE")]
    microsoft_db: Option<MicrosoftDbArg>,
    /// Add a bare SHA-256 hash (64 hex digits; an EFI_CERT_SHA256 entry), e.g. an image's
    /// Authenticode hash (repeatable).
    #[arg(long, value_name = "SHA256", value_parser = super::args::sha256)]
    hash: Vec<[u8; 32]>,
    /// Owner GUID of the certificates and hashes given (default: a0baa8a3-…).
    #[arg(long, value_name = "GUID", value_parser = GuidParser)]
    owner: Option<Guid>,
    /// How to write the change.
    #[arg(long, value_enum, default_value = "append")]
    strategy: StrategyArg,
    /// Print a JSON report of what changed on stdout (README, "JSON output of changing
    /// commands") instead of the line on stderr.
    #[arg(long)]
    json: bool,
}

/// Add to dbx: revoked certificates, hashes, signature lists or .auth updates, Microsoft's
/// dbx updates; or replace dbx with them (--replace).
#[derive(Debug, clap::Args)]
struct AddDbxArgs {
    #[command(flatten)]
    add: AddArgs,
    /// Replace dbx with what is given instead of adding to it (virt-fw-vars' --set-dbx). A
    /// dbx from an .auth update keeps the update's timestamp.
    #[arg(long)]
    replace: bool,
}

/// Print the SHA-256 of every entry of PK, KEK, db, dbx and shim's MOK lists: hash entries as
/// they are (what dbx tools compare), certificates by the hash of their DER.
#[derive(Debug, clap::Args)]
struct HashesArgs {
    /// The store.
    file: PathBuf,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Write every certificate of PK, KEK, db, dbx and shim's MOK lists as a PEM file, named
/// VARIABLE-OWNER-CN.pem as virt-fw-vars --extract-certs names them. Existing files are left
/// alone (reported as skipped).
#[derive(Debug, clap::Args)]
struct ExtractArgs {
    /// The store.
    file: PathBuf,
    /// The directory to write into (it must exist).
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    output: PathBuf,
    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Enroll(a) => enroll(a),
        Command::Status(a) => status(a),
        Command::AddKek(a) => add(a, Database::Kek, false),
        Command::AddDb(a) => add(a, Database::Db, false),
        Command::AddDbx(a) => add(a.add, Database::Dbx, a.replace),
        Command::AddMok(a) => add(a, Database::Mok, false),
        Command::Hashes(a) => hashes(a),
        Command::ExtractCerts(a) => extract_certs(a),
        Command::SignUpdate(a) => super::sign_update::sign_update(a),
        Command::ExportAuth(a) => super::sign_update::export_auth(a),
    }
}

fn read(path: &Path) -> Result<SignatureInput> {
    Ok(sb::read_input(path)?)
}

fn enroll(args: EnrollArgs) -> Result<ExitCode> {
    let inputs = EnrollInputs {
        kek: &args.kek,
        db: &args.db,
        dbx: args.dbx.as_deref(),
        microsoft: args.microsoft.map(Microsoft::from),
        microsoft_db: args.microsoft_db.map(MicrosoftDb::from),
        distro: args.distro.iter().copied().map(Distro::from).collect(),
        owner: args.owner,
        strategy: Strategy::from(args.strategy),
    };
    let (edited, generated) = match (&args.pk, &args.generate_pk) {
        (None, None) if args.platform.is_some() => {
            let platform = match args.platform {
                Some(PlatformArg::Microsoft) => sb::Platform::Microsoft,
                _ => sb::Platform::RedHat,
            };
            let mut plan = inputs.plan(platform.pk(), |_, p| read(p))?;
            if let Some(kek) = platform.kek() {
                plan.kek.insert(0, kek);
            }
            let edited = nvram::edit::edit_file(&args.file, |editor| sb::enroll(editor, &plan))?;
            (edited, None)
        }
        (None, None) if args.external_management => {
            let pk = SignatureInput::Lists {
                db: sb::external_management_pk(sb::EXTERNAL_MANAGEMENT_OWNER),
                time: None,
            };
            let plan = inputs.plan(pk, |_, p| read(p))?;
            let edited = nvram::edit::edit_file(&args.file, |editor| sb::enroll(editor, &plan))?;
            (edited, None)
        }
        (Some(path), None) => {
            let plan = inputs.plan(read(path)?, |_, p| read(p))?;
            let edited = nvram::edit::edit_file(&args.file, |editor| sb::enroll(editor, &plan))?;
            (edited, None)
        }
        (None, Some(cn)) => {
            let files = sb::PkFiles::for_store(&args.file, args.pk_key_out.as_deref())
                .context("--pk-key-out")?;
            // Replaced by the generated certificate.
            let placeholder = SignatureInput::Certificates(Vec::new());
            let plan = inputs.plan(placeholder, |_, p| read(p))?;
            let edited =
                sb::enroll_generated_pk(&args.file, cn, &files, plan).map_err(|e| match e {
                    e @ sb::GeneratedPkError::Exists { .. } => {
                        anyhow!(e).context("--generate-pk: nothing was changed")
                    }
                    e => anyhow!(e),
                })?;
            (edited, Some(files))
        }
        _ => bail!("give exactly one of --pk and --generate-pk"),
    };
    if args.json {
        let mut members = serde_json::json!({
            "variables": edited.value.iter().map(json_change).collect::<Vec<_>>(),
        });
        if let Some(files) = &generated {
            members["pk_key"] = files.key.to_string_lossy().into();
            members["pk_certificate"] = files.cert.to_string_lossy().into();
        }
        super::set::json_report(&args.file, &edited, members);
        return Ok(ExitCode::SUCCESS);
    }
    for c in &edited.value {
        report(&args.file, c);
    }
    if let Some(files) = &generated {
        let file = args.file.display();
        message!("{file}: PK private key: {}", files.key.display());
        message!("{file}: PK certificate: {}", files.cert.display());
    }
    super::set::note_free_space(&edited);
    Ok(ExitCode::SUCCESS)
}

/// An enrolment as a command line gives it, whatever its flags are called: `nvram secureboot
/// enroll` and `nvram apply --enroll-pk …` both build their [`EnrollPlan`] with it.
pub(super) struct EnrollInputs<'a> {
    /// The KEK certificates or lists.
    pub kek: &'a [PathBuf],
    /// The db certificates or lists.
    pub db: &'a [PathBuf],
    /// dbx; `None` for the dummy entry.
    pub dbx: Option<&'a Path>,
    /// Microsoft's certificates.
    pub microsoft: Option<Microsoft>,
    /// Microsoft's db certificates by profile, instead of those of `microsoft`.
    pub microsoft_db: Option<MicrosoftDb>,
    /// Distribution certificates.
    pub distro: Vec<Distro>,
    /// The owner GUID; `None` for the default.
    pub owner: Option<Guid>,
    /// How to write the variables.
    pub strategy: Strategy,
}

impl EnrollInputs<'_> {
    /// The plan with this PK. `read` reads a certificate input given with the flag for
    /// "kek", "db" or "dbx", in order, each command adding its own error context.
    pub(super) fn plan(
        self,
        pk: SignatureInput,
        read: impl Fn(&str, &Path) -> Result<SignatureInput>,
    ) -> Result<EnrollPlan> {
        let mut plan = EnrollPlan::with_pk(pk);
        plan.kek = self
            .kek
            .iter()
            .map(|p| read("kek", p))
            .collect::<Result<_>>()?;
        plan.db = self
            .db
            .iter()
            .map(|p| read("db", p))
            .collect::<Result<_>>()?;
        plan.dbx = self.dbx.map(|p| read("dbx", p)).transpose()?;
        plan.microsoft = self.microsoft;
        plan.microsoft_db = self.microsoft_db;
        plan.distro = self.distro;
        if let Some(owner) = self.owner {
            plan.owner = owner;
        }
        plan.strategy = self.strategy;
        Ok(plan)
    }
}

/// One variable of a `--json` report: name, guid, change, then the counts and time the text
/// gives.
fn json_change(c: &sb::VariableChange) -> serde_json::Value {
    serde_json::json!({
        "name": c.name,
        "guid": c.guid().to_string(),
        "change": c.change,
        "entries": c.entries,
        "added": c.added,
        "time": c.time,
    })
}

fn report(file: &Path, c: &sb::VariableChange) {
    let time = c
        .time
        .as_deref()
        .map(|t| format!(", time {t}"))
        .unwrap_or_default();
    if c.entries > 0 {
        message!(
            "{}: {}: {} ({} entries, {} new{time})",
            file.display(),
            c.name,
            c.change,
            c.entries,
            c.added
        );
    } else {
        message!("{}: {}: {}", file.display(), c.name, c.change);
    }
}

fn add(args: AddArgs, database: Database, replace: bool) -> Result<ExitCode> {
    if args.inputs.is_empty()
        && args.microsoft.is_none()
        && args.microsoft_db.is_none()
        && args.distro.is_empty()
        && args.hash.is_empty()
    {
        bail!("nothing to add: give certificate/list files, --hash, --microsoft or --distro");
    }
    if !args.distro.is_empty() && database != Database::Db {
        bail!("--distro adds a distribution's CA certificate to db: use add-db");
    }
    if args.microsoft_db.is_some() && database != Database::Db {
        bail!("--microsoft-db adds db certificates: use add-db");
    }
    if args.microsoft.is_some() && database == Database::Mok {
        bail!("--microsoft adds to KEK, db or dbx, not to shim's MokList");
    }
    let addition = sb::Addition {
        inputs: args.inputs.iter().map(|p| read(p)).collect::<Result<_>>()?,
        microsoft: args.microsoft.map(Microsoft::from),
        microsoft_db: args.microsoft_db.map(MicrosoftDb::from),
        distro: args.distro.iter().copied().map(Distro::from).collect(),
        hashes: args.hash.clone(),
        owner: args.owner.unwrap_or(OVMF_ENROLL_DEFAULT_KEYS),
        replace,
        ..sb::Addition::to(database)
    };
    let strategy = Strategy::from(args.strategy);
    let edited = nvram::edit::edit_file(&args.file, |editor| sb::add(editor, &addition, strategy))?;
    if args.json {
        let members = serde_json::json!({ "variables": [json_change(&edited.value)] });
        super::set::json_report(&args.file, &edited, members);
        return Ok(ExitCode::SUCCESS);
    }
    report(&args.file, &edited.value);
    super::set::note_free_space(&edited);
    Ok(ExitCode::SUCCESS)
}

fn hashes(args: HashesArgs) -> Result<ExitCode> {
    let loaded = super::Loaded::read(&args.file)?;
    let store = loaded
        .parse()?
        .ok_or_else(|| anyhow!("{}: no variable store", args.file.display()))?;
    let hashes = sb::entry_hashes(&store);
    if args.json {
        let mut text = nvram::escape::to_json_pretty(&hashes).context("JSON")?;
        text.push('\n');
        super::emit(None, false, text.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    for h in &hashes {
        let subject = h
            .subject
            .as_deref()
            .map(|s| format!("  {}", nvram::escape::terminal(s)))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<8} {:<6} {}  owner {}{subject}\n",
            nvram::escape::terminal(&h.variable),
            h.kind,
            h.sha256,
            h.owner
        ));
    }
    super::out::text(&out)?;
    Ok(ExitCode::SUCCESS)
}

fn extract_certs(args: ExtractArgs) -> Result<ExitCode> {
    let loaded = super::Loaded::read(&args.file)?;
    let store = loaded
        .parse()?
        .ok_or_else(|| anyhow!("{}: no variable store", args.file.display()))?;
    let written = sb::extract_certificates(&store, &args.output)
        .with_context(|| format!("cannot extract certificates into {}", args.output.display()))?;
    if args.json {
        let text = nvram::escape::to_json_pretty(&written).context("JSON")? + "\n";
        super::out::report(&text);
        return Ok(ExitCode::SUCCESS);
    }
    for c in &written {
        let what = if c.skipped {
            "exists, skipped"
        } else {
            "written"
        };
        message!("{}: {what}", c.path.display());
    }
    if written.is_empty() {
        message!("{}: no certificates", args.file.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn status(args: StatusArgs) -> Result<ExitCode> {
    let loaded = super::Loaded::read(&args.file)?;
    let store = loaded
        .parse()?
        .ok_or_else(|| anyhow!("{}: no variable store", args.file.display()))?;
    let status = sb::status(&store);
    if args.json {
        let mut text = nvram::escape::to_json_pretty(&status).context("JSON")?;
        text.push('\n');
        super::emit(None, false, text.as_bytes())?;
    } else {
        super::out::text(&text_status(&status))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn text_status(s: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mode = if s.setup_mode {
        "setup mode (no PK): the firmware runs any image"
    } else if s.secure_boot_at_next_boot {
        "user mode, Secure Boot on"
    } else {
        "user mode, Secure Boot off (SecureBootEnable=0)"
    };
    let _ = writeln!(out, "mode: {mode}");
    let byte = |b: Option<u8>| b.map_or("absent".to_string(), |b| b.to_string());
    let _ = writeln!(
        out,
        "SecureBootEnable: {}  CustomMode: {}",
        byte(s.secure_boot_enable),
        byte(s.custom_mode)
    );
    for db in &s.databases {
        if !db.present {
            let _ = writeln!(out, "{}: absent", db.name);
            continue;
        }
        let time = db.time.as_deref().unwrap_or("none");
        let malformed = if db.malformed { ", MALFORMED" } else { "" };
        let _ = writeln!(
            out,
            "{}: {} entries, attr {:#x}, time {time}{malformed}",
            db.name,
            db.entries.len(),
            db.attributes.unwrap_or(0)
        );
        for e in &db.entries {
            let owner = Guid::try_parse(&e.owner)
                .ok()
                .and_then(guid::name_of)
                .map_or(e.owner.clone(), str::to_string);
            let _ = writeln!(
                out,
                "  {} [owner {owner}]",
                nvram::escape::terminal(&e.description)
            );
        }
    }
    let _ = writeln!(out, "Microsoft certificates:");
    for m in &s.microsoft {
        let _ = writeln!(
            out,
            "  {:<4} {:<40} {}",
            m.database.name(),
            m.name,
            if m.present { "yes" } else { "no" }
        );
    }
    let _ =
        writeln!(
        out,
        "Microsoft 2023 rollout (KEK 2K CA 2023, Windows UEFI CA 2023, Microsoft UEFI CA 2023): {}",
        if s.microsoft_2023_ready { "complete" } else { "incomplete" }
    );
    out
}
