//! Model configurations, weight loading and architectures.

pub mod bert;
pub mod config;
pub mod e5s;
pub mod fetch;
pub mod hooks;
pub mod peft;
pub mod weights;
