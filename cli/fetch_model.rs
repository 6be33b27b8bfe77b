//! `engine-train fetch-model NAME`.

use polyadapt::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Model name.
    pub name: String,
}

pub fn run(_args: Args) -> Result<()> {
    Err(polyadapt::Error::Usage("fetch-model is not built yet".into()))
}
