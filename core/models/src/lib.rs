//! Shared model code: a BERT-family encoder in candle that can be fine-tuned (differentiable
//! layer norm, dropout with an explicit train flag and a seed), tokenization with our own
//! truncation and padding, and Hugging Face checkpoint directories in and out.

mod bert;
mod checkpoint;
mod config;
mod error;
mod kernels;
mod tokenizer;

pub use bert::{pool, BertClassifier, Dropout, McDepth, ModelOutput, StochasticPass};
pub use checkpoint::{save_safetensors, Checkpoint, ClassifierOptions, Weights};
pub use config::{BertConfig, Pooling};
pub use error::{ModelError, Result};
pub use tokenizer::{Batch, TextTokenizer};

#[cfg(test)]
mod tests;
