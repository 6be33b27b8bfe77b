//! Model configurations, weight loading and architectures.
