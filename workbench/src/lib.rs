//! The workbench engine: plugin host, configuration and runs.

pub mod allocator;
pub mod assets;
pub mod config;
pub mod data;
mod error;
pub mod evaluate;
pub mod files;
pub mod host;
pub mod isolation;
pub mod learner;
pub mod logging;
pub mod loss;
pub mod metrics;
pub mod predict;
pub mod run;
pub mod scaffold;
pub mod signals;
pub mod student;
pub mod suggest;
pub mod sweep;
pub mod teach;
pub mod train;

pub use error::{Error, Result};
