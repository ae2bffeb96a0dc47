use anyhow::Result;
use nvram::escape::terminal;
use nvram::inspect::Health;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Validate a store and say what the firmware will do with it.
///
/// Also lists the temporary files that interrupted writes left next to the store (warnings,
/// `temp_files` in --json; `nvram clean` removes them): they do not change the status.
///
/// Exit status: 0 healthy, 1 problems found, 2 not a varstore or unreadable.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store.
    file: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let checked = nvram::inspect::check_file(&args.file)?;
    let (report, format, qemu_storage, leftovers) = (
        checked.report,
        checked.format,
        checked.qemu_storage,
        checked.leftovers,
    );
    if args.json {
        let mut doc = serde_json::to_value(&report)?;
        doc["file"] = serde_json::json!(args.file);
        doc["format"] = serde_json::json!(format);
        if let Some(q) = &qemu_storage {
            doc["free_bytes"] = q.free().into();
            doc["qemu_storage"] = serde_json::json!({
                "used": q.total(), "limit": q.limit, "free": q.free()
            });
        }
        doc["temp_files"] = leftovers
            .iter()
            .map(|l| serde_json::json!({"path": l.path, "bytes": l.len}))
            .collect();
        let json = nvram::escape::to_json_pretty(&doc)? + "\n";
        super::emit(None, false, json.as_bytes())?;
    } else {
        let mut text = String::new();
        let layout = report
            .layout
            .map(|l| format!(" ({l} layout)"))
            .unwrap_or_default();
        let layout = match format {
            nvram::container::Format::Raw => layout,
            other => format!(" ({other}){layout}"),
        };
        let _ = writeln!(text, "{}: {}{layout}", args.file.display(), report.status);
        if let Some(error) = &report.error {
            let _ = writeln!(text, "  {}", terminal(error));
        } else {
            match &qemu_storage {
                Some(q) => writeln!(
                    text,
                    "  {} live variables; QEMU's storage: {} of {} bytes used, {} free",
                    report.live,
                    q.total(),
                    q.limit,
                    q.free()
                ),
                None => writeln!(
                    text,
                    "  {} records, {} live variables, {} bytes free",
                    report.records, report.live, report.free_bytes
                ),
            }
            .ok();
        }
        for finding in &report.findings {
            let _ = writeln!(text, "  {}", terminal(&finding.to_string()));
        }
        let _ = writeln!(text, "  firmware: {}", report.verdict_text);
        if report.status == "unformatted" && report.health() != Health::Healthy {
            let _ = writeln!(text, "  `nvram create` makes a formatted store");
        }
        for l in &leftovers {
            let _ = writeln!(
                text,
                "  warning: {} ({} bytes) is a temporary file an interrupted write left; \
                 `nvram clean {}` removes it",
                l.path.display(),
                l.len,
                args.file.display()
            );
        }
        super::out::text(&text)?;
    }
    // 0 healthy, 1 problems, 2 not a varstore (as for an unreadable file).
    Ok(ExitCode::from(match report.health() {
        Health::Healthy => 0,
        Health::Problems => 1,
        Health::NotAVarstore => 2,
    }))
}
