//! Optimisation (engine/optim) against torch and transformers: AdamW step for step, the
//! learning-rate schedules, gradient clipping, the checkpointed state, thread-count independence.
//! Reference values: tests/fixtures/adamw_reference.safetensors, written by
//! tests/reference/make_optim_fixtures.py.

mod common;

#[path = "optim/adamw.rs"]
mod adamw;
#[path = "optim/clip.rs"]
mod clip;
#[path = "optim/fixture.rs"]
mod fixture;
#[path = "optim/properties.rs"]
mod properties;
#[path = "optim/schedule.rs"]
mod schedule;
#[path = "optim/state.rs"]
mod state;
