//! `nvram vms`: libvirt's domains with their firmware and varstore, and our verdict on each
//! store; and the `--libvirt` targets of `apply` and `upgrade`.

use super::out::message;
use anyhow::Result;
use nvram::apply::FileResult;
use nvram::escape::terminal;
use nvram::libvirt::{Domain, Health, Selection, Target};
use std::fmt::Write as _;
use std::process::ExitCode;

/// List libvirt's domains with their firmware, varstore and our verdict on the store.
///
/// For each domain (defined or transient, running or not): its state, the firmware loader,
/// the varstore (path, format, template) and the store's health: what `nvram check` says of
/// its content, whether the content is in the format the domain XML declares (raw where the
/// XML names none, as libvirt 9.0 has no other), and when the XML names the template whether
/// the store fits it (size and layout). A domain whose XML has no <nvram> but boots UEFI
/// (`<os firmware='efi'>`, a pflash loader) is shown with the store libvirt names
/// (NVRAM_DIR/NAME_VARS.fd; libvirt 9.0 writes <nvram> only into a running domain's XML); a
/// store that does not exist yet is `missing` (libvirt copies the template at the next start).
/// A running domain's store is read while its QEMU may write it.
///
/// Domains are read with `virsh` (libvirt-clients) in a few batched calls, whatever their
/// number. Exit status: 0 when every store is healthy or missing, 1 when some has problems,
/// 2 on errors (libvirtd unreachable, a domain named with --domain that does not exist).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// libvirt connection URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system).
    #[arg(long, short = 'c', value_name = "URI")]
    connect: Option<String>,
    /// Only these domains (exact names; repeatable).
    #[arg(long, value_name = "NAME")]
    domain: Vec<String>,
    /// Print a JSON array of {name, uuid, state, active, type, firmware, arch, machine,
    /// loader, nvram, health}.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let uri = args.connect.unwrap_or_else(nvram::libvirt::default_uri);
    let domains = nvram::libvirt::list_domains(&uri)?;
    let selection = if args.domain.is_empty() {
        Selection::All
    } else {
        Selection::Names(args.domain.clone())
    };
    let picked = nvram::libvirt::select(&domains, &selection)?;
    let healths = nvram::libvirt::healths(&picked);
    let unhealthy = healths.iter().flatten().filter(|h| !h.is_healthy()).count();
    if args.json {
        let mut list = Vec::with_capacity(picked.len());
        for (domain, health) in picked.iter().zip(&healths) {
            let mut doc = serde_json::to_value(domain)?;
            doc["health"] = serde_json::to_value(health)?;
            list.push(doc);
        }
        super::out::result((nvram::escape::to_json_pretty(&list)? + "\n").as_bytes())?;
    } else {
        let mut text = String::new();
        for (d, health) in picked.iter().zip(&healths) {
            describe(&mut text, d, health.as_ref());
        }
        super::out::text(&text)?;
        message!(
            "nvram: {} domains, {} with a varstore, {} unhealthy",
            picked.len(),
            picked.iter().filter(|d| d.nvram.is_some()).count(),
            unhealthy
        );
    }
    Ok(if unhealthy > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn describe(text: &mut String, d: &Domain, health: Option<&Health>) {
    let t = |s: &str| terminal(s).into_owned();
    let p = |p: &std::path::Path| terminal(&p.to_string_lossy()).into_owned();
    let firmware = d
        .firmware
        .as_deref()
        .map_or(String::new(), |f| format!(", firmware {f}"));
    let _ = writeln!(
        text,
        "{} ({}): {}{firmware}",
        t(&d.name),
        d.uuid,
        t(&d.state)
    );
    if let Some(l) = &d.loader {
        let mut flags = Vec::new();
        if let Some(kind) = &l.kind {
            flags.push(t(kind));
        }
        if l.readonly == Some(true) {
            flags.push("readonly".into());
        }
        if l.secure == Some(true) {
            flags.push("secure".into());
        }
        let _ = writeln!(
            text,
            "  loader {} ({})",
            l.path.as_deref().map_or("(chosen by libvirt)".into(), p),
            flags.join(", ")
        );
    }
    let Some(n) = &d.nvram else {
        let _ = writeln!(text, "  no varstore");
        return;
    };
    let template = match &n.template {
        Some(tpl) => format!(" from {}", p(tpl)),
        None if n.implicit => " (libvirt's default path; template picked at start)".into(),
        None => String::new(),
    };
    let _ = writeln!(text, "  varstore {} ({}){template}", p(&n.path), n.format);
    if let Some(h) = health {
        let detail = h
            .check
            .as_ref()
            .map(|c| {
                format!(
                    " ({}; {})",
                    c.layout.unwrap_or("unknown layout"),
                    c.verdict_text
                )
            })
            .unwrap_or_default();
        let _ = writeln!(text, "  health: {}{detail}", h.status);
        for problem in &h.problems {
            let _ = writeln!(text, "    {}", t(problem));
        }
    }
}

/// `--libvirt [--connect URI] (--domain NAME… | --all)` of `apply` and `upgrade`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    next_help_heading = "libvirt domains",
    group(clap::ArgGroup::new("libvirt_domains").args(["domain", "all"]))
)]
pub struct LibvirtArgs {
    /// Edit the varstores of libvirt domains (with --domain or --all) instead of files:
    /// running domains are skipped (reported as skipped, never edited), as are domains whose
    /// store libvirt has not created yet.
    #[arg(long, requires = "libvirt_domains")]
    pub libvirt: bool,
    /// libvirt connection URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system).
    #[arg(long, value_name = "URI", requires = "libvirt")]
    pub connect: Option<String>,
    /// A domain by name (exact; repeatable).
    #[arg(long, value_name = "NAME", requires = "libvirt")]
    pub domain: Vec<String>,
    /// Every domain that has a UEFI varstore.
    #[arg(long, requires = "libvirt", conflicts_with = "domain")]
    pub all: bool,
}

impl LibvirtArgs {
    /// The stores of the domains asked for.
    pub fn targets(&self) -> Result<Vec<Target>> {
        // clap requires --domain or --all with --libvirt.
        let selection = if self.all {
            Selection::All
        } else {
            Selection::Names(self.domain.clone())
        };
        let uri = self
            .connect
            .clone()
            .unwrap_or_else(nvram::libvirt::default_uri);
        let domains = nvram::libvirt::list_domains(&uri)?;
        let found = nvram::libvirt::targets(&domains, &selection)?;
        if found.without_store > 0 {
            message!(
                "nvram: {} domains without a UEFI varstore left out",
                found.without_store
            );
        }
        Ok(found.targets)
    }
}

/// The report of [`nvram::libvirt::apply_targets`]: text lines `RESULT FILE (domain NAME): DETAIL`, or a JSON
/// array of {"domain", "file", "result", "detail"}.
pub fn report(results: &[(String, FileResult)], json: bool) -> Result<String> {
    if json {
        let mut list = Vec::with_capacity(results.len());
        for (domain, r) in results {
            let mut doc = serde_json::to_value(r)?;
            doc["domain"] = serde_json::json!(domain);
            list.push(doc);
        }
        return Ok(nvram::escape::to_json_pretty(&list)? + "\n");
    }
    let mut text = String::new();
    for (domain, r) in results {
        let _ = writeln!(
            text,
            "{} {} (domain {}): {}",
            r.status,
            terminal(&r.file.to_string_lossy()),
            terminal(domain),
            terminal(&r.detail)
        );
    }
    Ok(text)
}
