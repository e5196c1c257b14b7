use std::path::PathBuf;

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },

    #[error("{path}: tensor `{tensor}` {problem}")]
    Weights { path: PathBuf, tensor: String, problem: String },

    #[error("tokenizer {path} does not match the model: {reason}")]
    TokenizerMismatch { path: PathBuf, reason: String },

    #[error("label `{label}` is not known to the checkpoint {path} (its labels: {known})")]
    UnknownLabel { label: String, path: PathBuf, known: String },

    /// Options the checkpoint cannot satisfy (more layers than it has).
    #[error("{0}")]
    InvalidRequest(String),

    #[error("tokenization failed: {0}")]
    Tokenize(String),

    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub(crate) fn file(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        ModelError::File { path: path.into(), reason: reason.to_string() }
    }
}
