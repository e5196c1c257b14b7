//! The workbench engine: plugin host, configuration and runs.
//!
//! - [`host`]: loading plugin libraries (in this process or isolated in workers);
//! - [`config`], [`data`], [`assets`]: what a run is made of;
//! - [`training`]: the one training loop for teachers and students;
//! - [`signal_cache`]: the teachers' outputs, computed once;
//! - [`run`]: one experiment end to end; [`sweep`]: a grid of them as a job graph;
//! - [`evaluate`], [`metrics`]: the measures reports are made of; [`model_card`]: the README of
//!   every exported checkpoint.

pub mod allocator;
pub mod amalgamate;
pub mod assets;
pub mod columnar;
pub mod config;
pub mod data;
mod error;
pub mod evaluate;
pub mod files;
pub mod host;
pub mod logging;
pub mod metrics;
pub mod model_card;
pub mod predict;
pub mod progress;
pub mod run;
pub mod scaffold;
pub mod signal_cache;
pub mod suggest;
pub mod sweep;
pub mod training;

pub use error::{Error, Result};
