//! `engine-train report RUN_DIRS... [--out DIR] [--by KEY]`: the tables of a set of finished
//! runs (a sweep's output directory, or run directories), as Markdown on standard output and
//! in `DIR/report.md`, and the ablation curves as PNG plots in `DIR` (the first directory
//! given by default).
//!
//! Runs that differ only in their seed are one row: mean ± standard deviation over seeds for
//! every evaluation set; F1, then exact match (QA), accuracy (pairs), ROUGE-L, BLEU and METEOR
//! (generation); a stability score per row on the main metrics (see `table.rs`). Rows and tables are sorted, so the same runs give the same text.

mod plot;
mod runs;
mod table;

use std::path::PathBuf;

use polyadapt::models::weights::write_atomic;
use polyadapt::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Run directories, or directories holding runs (searched recursively: a sweep's output).
    #[arg(required = true, value_name = "RUN_DIRS")]
    pub runs: Vec<PathBuf>,
    /// Where report.md and the plots go (default: the first directory given).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Rows by this sweep axis or configuration key (`method`, `optim.lr`); the other axes
    /// make separate tables. Default: one row per sweep point.
    #[arg(long)]
    pub by: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let dirs = runs::discover(&args.runs)?;
    let runs = dirs.iter().map(|d| runs::load(d)).collect::<Result<Vec<_>>>()?;
    let layout = table::layout(&runs, args.by.as_deref())?;
    let md = table::render(&layout, runs.len());
    print!("{md}");
    let out = args.out.clone().unwrap_or_else(|| args.runs[0].clone());
    std::fs::create_dir_all(&out).map_err(|e| Error::io("cannot create", &out, e))?;
    write_atomic(&out.join("report.md"), md.as_bytes())?;
    eprintln!("wrote {}", out.join("report.md").display());
    for p in plot::ablation_plots(&layout, &out)? {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
