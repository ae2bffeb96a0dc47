use super::Loaded;
use anyhow::Result;
use nvram::escape::terminal;
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
    if args.json {
        let doc = serde_json::json!({ "file": args.file, "variables": views });
        let json = nvram::escape::to_json_pretty(&doc)? + "\n";
        super::emit(None, false, json.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    // Names and values come from the store: escaped, and aligned as they are printed.
    let names: Vec<_> = views.iter().map(|v| terminal(&v.name)).collect();
    let name_width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    // Each line is written in place and its trailing blanks cut (a variable without a value).
    for (v, name) in views.iter().zip(&names) {
        if args.all {
            let _ = write!(out, "{:#08x} {:<13} ", v.offset, v.state);
        }
        let value = terminal(v.value.as_deref().unwrap_or(""));
        let _ = write!(
            out,
            "{}  {name:<name_width$}  {:<10} {:>6}  {value}",
            v.guid,
            v.flags.join(","),
            v.size
        );
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    super::out::text(&out)?;
    Ok(ExitCode::SUCCESS)
}
