use anyhow::Result;
use nvram::inspect::CheckReport;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use varstore::Varstore;

/// Validate a store and say what the firmware will do with it.
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
    let image = nvram::files::read_image(&args.file)?;
    let report = match Varstore::parse(&image) {
        Ok(store) => CheckReport::of_store(&store),
        Err(e) => CheckReport::of_error(&e, image.len()),
    };
    let output = if args.json {
        let mut doc = serde_json::to_value(&report)?;
        doc["file"] = serde_json::json!(args.file);
        serde_json::to_string_pretty(&doc)? + "\n"
    } else {
        let mut text = String::new();
        let layout = report
            .layout
            .map(|l| format!(" ({l} layout)"))
            .unwrap_or_default();
        let _ = writeln!(text, "{}: {}{layout}", args.file.display(), report.status);
        if let Some(error) = &report.error {
            let _ = writeln!(text, "  {error}");
        } else {
            let _ = writeln!(
                text,
                "  {} records, {} live variables, {} bytes free",
                report.records, report.live, report.free_bytes
            );
        }
        for finding in &report.findings {
            let _ = writeln!(text, "  {finding}");
        }
        let _ = writeln!(text, "  firmware: {}", report.verdict_text);
        text
    };
    super::emit(None, false, output.as_bytes())?;
    Ok(ExitCode::from(report.exit_code()))
}
