//! `engine-train`: the experiment binary.
//!
//! Subcommands live in `cli/`, one file each. Errors come back as [`polyadapt::Error`] and are
//! printed as one readable chain on standard error with exit code 1.

mod cli;

use clap::Parser;

// A training step frees and reallocates hundreds of MiB per step: see `engine::memory`.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    polyadapt::engine::memory::configure();
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {}", e.chain());
        std::process::exit(1);
    }
}
