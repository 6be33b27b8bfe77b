//! `engine-train hidden`.

use polyadapt::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Model directory.
    #[arg(long)]
    pub model: String,
}

pub fn run(_args: Args) -> Result<()> {
    Err(polyadapt::Error::Usage("hidden is not built yet".into()))
}
