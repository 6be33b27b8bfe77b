//! Model configurations, weight loading and architectures.

pub mod config;
pub mod e5s;
pub mod fetch;
pub mod weights;
