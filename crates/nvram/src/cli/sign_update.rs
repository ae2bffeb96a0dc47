//! `nvram secureboot sign-update` and `export-auth`: signed (or, as virt-fw-vars writes them,
//! unsigned) `.auth` updates of PK, KEK, db and dbx for a running guest to apply.

use super::args::GuidParser;
use super::out::message;
use anyhow::{bail, Context, Result};
use nvram::certs::SignatureInput;
use nvram::secureboot::{self as sb, Database, UpdateMode, UpdateSigner};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use varstore::guid::Guid;
use varstore::secureboot::{SignatureDb, OVMF_ENROLL_DEFAULT_KEYS};
use varstore::EfiTime;

/// The database an update is for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DatabaseArg {
    /// The platform key (signed by the current PK).
    Pk,
    /// Key exchange keys (signed by the PK).
    Kek,
    /// Allowed signatures (signed by a KEK).
    Db,
    /// Forbidden signatures (signed by a KEK).
    Dbx,
}

impl From<DatabaseArg> for Database {
    fn from(d: DatabaseArg) -> Self {
        match d {
            DatabaseArg::Pk => Database::Pk,
            DatabaseArg::Kek => Database::Kek,
            DatabaseArg::Db => Database::Db,
            DatabaseArg::Dbx => Database::Dbx,
        }
    }
}

/// Sign an update of PK, KEK, db or dbx as an .auth file, for a running guest to apply
/// through the firmware (e.g. `efi-updatevar -f FILE.auth db` on Linux; in the UEFI shell,
/// `dmpstore -all -l FILE` with --dmpstore).
///
/// The update replaces the database with the given certificates, signature lists and .auth
/// contents (none: deletes it), or with --append adds them. Sign PK and KEK updates with the
/// platform key, db and dbx updates with a KEK; the firmware refuses anything else.
#[derive(Debug, clap::Args)]
pub struct SignUpdateArgs {
    /// The database to update.
    #[arg(value_enum)]
    database: DatabaseArg,
    /// Certificates (PEM/DER), signature lists or .auth files: the new value, or what to add.
    inputs: Vec<PathBuf>,
    /// The signing private key: RSA, PKCS#8 or PKCS#1, PEM or DER, unencrypted.
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// The signing key's certificate (PEM or DER); it is carried in the signature.
    #[arg(long, value_name = "CERT")]
    cert: PathBuf,
    /// The .auth file to write (created owner-only; must not exist unless --force).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
    /// Write the payload with the variable's name, GUID and attributes, as the UEFI shell's
    /// `dmpstore -all -l FILE` loads it (which can append, unlike the shell's setvar), instead
    /// of the bare payload (what efi-updatevar and efivarfs take).
    #[arg(long)]
    dmpstore: bool,
    /// Add to the database (EFI_VARIABLE_APPEND_WRITE) instead of replacing it (not for pk).
    #[arg(long)]
    append: bool,
    /// Owner GUID of the certificates given (default: a0baa8a3-…).
    #[arg(long, value_name = "GUID", value_parser = GuidParser)]
    owner: Option<Guid>,
    /// The update's timestamp, UTC, as YYYY-MM-DDTHH:MM:SS[Z] (default: now). A replacing
    /// update must be later than the variable's timestamp.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    time: Option<EfiTime>,
    /// Print a JSON report on stdout instead of the line on stderr.
    #[arg(long)]
    json: bool,
}

/// Write PK.auth, KEK.auth, db.auth and dbx.auth with the store's databases (virt-fw-vars
/// --output-auth): unsigned and dated as in the store (byte for byte what virt-fw-vars
/// writes; a firmware takes them only in setup mode), or signed with --key/--cert and dated
/// now (a firmware in user mode takes PK.auth and KEK.auth signed by the PK, db.auth and
/// dbx.auth signed by a KEK).
#[derive(Debug, clap::Args)]
pub struct ExportAuthArgs {
    /// The store.
    file: PathBuf,
    /// The directory to write to (created if missing).
    dir: PathBuf,
    /// Sign with this private key (RSA, PKCS#8 or PKCS#1, PEM or DER).
    #[arg(long, value_name = "KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// The signing key's certificate.
    #[arg(long, value_name = "CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// The timestamp of signed files, as for sign-update (default: now).
    #[arg(long, value_name = "TIME", value_parser = parse_time, requires = "key")]
    time: Option<EfiTime>,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
    /// Print a JSON report on stdout instead of the lines on stderr.
    #[arg(long)]
    json: bool,
}

/// `YYYY-MM-DDTHH:MM:SS` with an optional `Z`, UTC.
fn parse_time(text: &str) -> Result<EfiTime, String> {
    let bad = || format!("{text:?} is not a UTC time like 2026-01-31T12:00:00Z");
    let t = text.strip_suffix('Z').unwrap_or(text);
    let (date, clock) = t.split_once('T').ok_or_else(bad)?;
    let numbers = |s: &str, sep: char| -> Result<Vec<u16>, String> {
        s.split(sep)
            .map(|n| n.parse::<u16>().map_err(|_| bad()))
            .collect()
    };
    let (d, c) = (numbers(date, '-')?, numbers(clock, ':')?);
    let (&[y, mo, da], &[h, mi, s]) = (d.as_slice(), c.as_slice()) else {
        return Err(bad());
    };
    let narrow = |v: u16| u8::try_from(v).map_err(|_| bad());
    let valid = x509_cert::der::DateTime::new(
        y,
        narrow(mo)?,
        narrow(da)?,
        narrow(h)?,
        narrow(mi)?,
        narrow(s)?,
    )
    .map_err(|_| bad())?;
    Ok(varstore::secureboot::efi_time(
        valid.year(),
        valid.month(),
        valid.day(),
        valid.hour(),
        valid.minutes(),
        valid.seconds(),
    ))
}

fn time_text(t: &EfiTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        t.0[2],
        t.0[3],
        t.0[4],
        t.0[5],
        t.0[6]
    )
}

pub fn sign_update(args: SignUpdateArgs) -> Result<ExitCode> {
    let database = Database::from(args.database);
    let mode = if args.append {
        UpdateMode::Append
    } else {
        UpdateMode::Replace
    };
    if database == Database::Pk && mode == UpdateMode::Append {
        bail!("--append: the PK holds one certificate and is only ever replaced");
    }
    if mode == UpdateMode::Append && args.inputs.is_empty() {
        bail!("--append: nothing to add (give certificate or list files)");
    }
    let owner = args.owner.unwrap_or(OVMF_ENROLL_DEFAULT_KEYS);
    let mut value = SignatureDb::default();
    for path in &args.inputs {
        match sb::read_input(path)? {
            SignatureInput::Certificates(certs) => {
                for der in certs {
                    value.add_x509(owner, &der);
                }
            }
            SignatureInput::Lists { db, .. } => {
                value.merge(&db);
            }
        }
    }
    if database == Database::Pk && (value.certificates().count() > 1 || value.has_hashes()) {
        bail!(
            "the PK holds exactly one certificate; {} given",
            value.lists.len()
        );
    }
    let signer = UpdateSigner::read(&args.key, &args.cert)?;
    let time = args.time.unwrap_or_else(nvram::certs::now);
    let mut auth = sb::sign_update(database, &value, mode, time, &signer)?;
    if args.dmpstore {
        auth = sb::dmpstore_record(database.name(), database.guid(), mode.attributes(), &auth);
    }
    super::write_output(&args.output, &auth, args.force)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let entries: usize = value.lists.iter().map(|l| l.entries.len()).sum();
    let mode_text = match mode {
        UpdateMode::Replace => "replace",
        UpdateMode::Append => "append",
    };
    if args.json {
        let report = serde_json::json!({
            "file": args.output.to_string_lossy(),
            "name": database.name(),
            "guid": database.guid().to_string(),
            "mode": mode_text,
            "attributes": mode.attributes().0,
            "time": time_text(&time),
            "entries": entries,
            "signer": signer.subject(),
            "size": auth.len(),
            "dmpstore": args.dmpstore,
        });
        let mut text = serde_json::to_string_pretty(&report).context("JSON")?;
        text.push('\n');
        super::emit(None, false, text.as_bytes())?;
    } else {
        message!(
            "{}: {}{} {mode_text} ({entries} entries, attributes {:#x}, time {}), signed by {}",
            args.output.display(),
            if args.dmpstore { "dmpstore file: " } else { "" },
            database.name(),
            mode.attributes().0,
            time_text(&time),
            signer.subject()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn export_auth(args: ExportAuthArgs) -> Result<ExitCode> {
    let loaded = super::Loaded::read(&args.file)?;
    let store = loaded
        .parse()?
        .ok_or_else(|| anyhow::anyhow!("{}: no variable store", args.file.display()))?;
    let signer = match (&args.key, &args.cert) {
        (Some(key), Some(cert)) => Some(UpdateSigner::read(key, cert)?),
        _ => None,
    };
    let time = args.time.unwrap_or_else(nvram::certs::now);
    let files = sb::export_auth(&store, signer.as_ref(), time)?;
    if files.is_empty() {
        bail!("{}: no PK, KEK, db or dbx to export", args.file.display());
    }
    create_dir(&args.dir)?;
    let mut written = Vec::new();
    for (database, auth) in &files {
        let path = args.dir.join(format!("{}.auth", database.name()));
        super::write_output(&path, auth, args.force)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(serde_json::json!({
            "file": path.to_string_lossy(),
            "name": database.name(),
            "size": auth.len(),
        }));
        if !args.json {
            message!(
                "{}: {} ({} bytes)",
                path.display(),
                database.name(),
                auth.len()
            );
        }
    }
    if args.json {
        let report = serde_json::json!({
            "signed_by": signer.as_ref().map(UpdateSigner::subject),
            "files": written,
        });
        let mut text = serde_json::to_string_pretty(&report).context("JSON")?;
        text.push('\n');
        super::emit(None, false, text.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn create_dir(dir: &Path) -> Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create directory {}", dir.display())),
    }
}
