//! `engine-train sweep --config SWEEP.toml [--out DIR] [--quick] [--set KEY=VALUE] [--dry-run]`:
//! runs every point of a grid of training configurations (the file format is in `config.rs`),
//! one after another in this process, one run directory per point:
//! `DIR/<axis>=<value>,.../seed=<N>/` (`runs/<sweep name>` by default, `-quick` added with
//! `--quick`).
//!
//! Every point is expanded and checked before the first one runs: an unknown key, an empty
//! list, a point whose configuration is invalid or names a missing data file is an error
//! naming the point and the key. A point whose directory already has `results.json` is
//! skipped; one with a `config.toml` but no results (a killed sweep) continues from its last
//! checkpoint. A directory holding a run of another configuration is an error, never
//! overwritten. Each point also gets `sweep_point.json` (its axis values and seed), which
//! `engine-train report` uses to name table rows.
//!
//! A point that fails is reported and the sweep goes on; the command fails at the end if any
//! did. Points run one at a time: a run already uses every core (rayon), so two at once would
//! only compete.

mod config;
mod grid;

use std::path::{Path, PathBuf};
use std::time::Instant;

use polyadapt::models::weights::write_atomic;
use polyadapt::{Error, Result};

use crate::cli::train;
use crate::cli::train::config::Config;
use config::Sweep;
use grid::Point;

#[derive(clap::Args)]
pub struct Args {
    /// The sweep file (TOML): a base training configuration, a grid of keys and values,
    /// named variants, seeds, and a [quick] form.
    #[arg(long)]
    pub config: PathBuf,
    /// Output directory (default: runs/<sweep file name>, with `-quick` added under --quick).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run the sweep file's [quick] form (few steps, small samples: a CI-sized check).
    #[arg(long)]
    pub quick: bool,
    /// Set a key in every point after the grid, `--set model.name=DIR` (repeatable; not a
    /// grid key).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Check the sweep and list its points and their state; run nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// What a point's directory already holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    /// `config.toml` without `results.json`: a killed run to continue.
    Unfinished,
    Done,
}

pub fn run(args: Args) -> Result<()> {
    let sweep = Sweep::load(&args.config, args.quick, &args.set)?;
    let points = grid::expand(&sweep)?;
    let out = args.out.clone().unwrap_or_else(|| {
        let stem = args.config.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "sweep".into());
        Path::new("runs").join(if args.quick { format!("{stem}-quick") } else { stem })
    });
    let states = points.iter().map(|p| state_of(&out.join(&p.dir), &p.config)).collect::<Result<Vec<_>>>()?;
    for model in points.iter().map(|p| p.config.model.name.as_str()).collect::<std::collections::BTreeSet<_>>() {
        crate::cli::model_arg::model_dir(model).map_err(|e| e.context(format!("{}: model.name", sweep.path.display())))?;
    }
    let n = points.len();
    let todo = states.iter().filter(|&&s| s != State::Done).count();
    let combos: usize = sweep.axes.iter().map(|a| a.choices.len()).product();
    eprintln!("sweep {}: {n} point(s) ({combos} combination(s) of {} axis/axes x {} seed(s)), {todo} to run, in {}", sweep.path.display(), sweep.axes.len(), sweep.seeds.len(), out.display());
    if args.dry_run {
        for (p, s) in points.iter().zip(&states) {
            let what = match s {
                State::New => "new",
                State::Unfinished => "unfinished",
                State::Done => "done",
            };
            println!("{what:<10} {}", p.display());
        }
        return Ok(());
    }
    let began = Instant::now();
    let (mut trained, mut failed) = (0usize, Vec::new());
    for (i, (p, &state)) in points.iter().zip(&states).enumerate() {
        let tag = format!("[sweep {}/{n}] {}", i + 1, p.display());
        if state == State::Done {
            eprintln!("{tag}: done before, skipped");
            continue;
        }
        let left = todo - trained - failed.len();
        let eta = match trained + failed.len() {
            0 => String::new(),
            k => format!(", about {} left", clock(began.elapsed().as_secs_f64() / k as f64 * left as f64)),
        };
        eprintln!("{tag}: {} ({} of {todo} to run; {} elapsed{eta})", if state == State::New { "training" } else { "continuing" }, trained + failed.len() + 1, clock(began.elapsed().as_secs_f64()));
        let t0 = Instant::now();
        match run_point(&out.join(&p.dir), p, &sweep, state) {
            Ok(()) => {
                trained += 1;
                eprintln!("{tag}: finished in {}", clock(t0.elapsed().as_secs_f64()));
            }
            Err(e) => {
                eprintln!("{tag}: failed: {}", e.chain());
                failed.push(p.display());
            }
        }
    }
    eprintln!("sweep {}: {trained} trained, {} skipped, {} failed, in {}", sweep.path.display(), n - todo, failed.len(), clock(began.elapsed().as_secs_f64()));
    if !failed.is_empty() {
        return Err(Error::Usage(format!("{} point(s) failed: {} (run the sweep again to retry them)", failed.len(), failed.join(", "))));
    }
    println!("{}", out.display());
    Ok(())
}

fn run_point(dir: &Path, p: &Point, sweep: &Sweep, state: State) -> Result<()> {
    if state == State::New {
        train::start_run_dir(dir, &p.config)?;
    }
    let labels: Vec<serde_json::Value> = p.labels.iter().map(|(name, v)| serde_json::json!({ "axis": name, "value": v })).collect();
    let point = serde_json::json!({ "sweep": sweep.path.display().to_string(), "labels": labels, "seed": p.seed });
    write_atomic(&dir.join("sweep_point.json"), serde_json::to_string_pretty(&point).expect("serialises").as_bytes())?;
    train::train_in(p.config.clone(), dir, state == State::Unfinished)
}

/// Compares what a point's directory holds with the point's configuration.
fn state_of(dir: &Path, cfg: &Config) -> Result<State> {
    let file = dir.join("config.toml");
    if !file.exists() {
        return Ok(State::New);
    }
    let held = Config::load(&file, &[])?;
    // The thread count changes nothing in the results (they are bit-identical across it).
    let mut a = held.clone();
    a.run.threads = cfg.run.threads;
    if a != *cfg {
        let (old, new) = (held.to_toml(), cfg.to_toml());
        let diff = old.lines().zip(new.lines()).find(|(x, y)| x != y).map(|(x, y)| format!(" (it has `{x}`, the sweep gives `{y}`)")).unwrap_or_default();
        return Err(Error::Usage(format!(
            "{} holds a run of another configuration{diff}: the sweep file changed since it ran? Remove that directory or choose another --out",
            dir.display()
        )));
    }
    Ok(if dir.join("results.json").exists() { State::Done } else { State::Unfinished })
}

/// `1h02m`, `3m05s`, `12s`.
fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}
