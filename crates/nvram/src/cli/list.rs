use super::Loaded;
use anyhow::Result;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// List the variables of a store.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store.
    file: PathBuf,
    /// Show every record, including deleted, replaced and incomplete ones, with state and offset.
    #[arg(long)]
    all: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let loaded = Loaded::read(&args.file)?;
    let views = match loaded.parse()? {
        Some(store) => nvram::inspect::variables(&store, args.all),
        None => Vec::new(),
    };
    let mut out = String::new();
    if args.json {
        let doc = serde_json::json!({ "file": args.file, "variables": views });
        out = serde_json::to_string_pretty(&doc)? + "\n";
    } else {
        let name_width = views.iter().map(|v| v.name.len()).max().unwrap_or(4).max(4);
        for v in &views {
            let prefix = if args.all {
                format!("{:#08x} {:<13} ", v.offset, v.state)
            } else {
                String::new()
            };
            let value = v.value.as_deref().unwrap_or("");
            let line = format!(
                "{prefix}{}  {:<name_width$}  {:<10} {:>6}  {value}",
                v.guid,
                v.name,
                v.flags.join(","),
                v.size
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    super::emit(None, false, out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
