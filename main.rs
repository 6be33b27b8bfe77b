//! `engine-train`: the experiment binary.
//!
//! Subcommands live in `cli/`, one file each. Errors come back as [`polyadapt::Error`] and are
//! printed as one readable chain on standard error with exit code 1.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {}", e.chain());
        std::process::exit(1);
    }
}
