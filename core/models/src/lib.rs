//! Shared model code: a BERT-family encoder (BERT, RoBERTa, XLM-R, DistilBERT) in candle that can be fine-tuned (differentiable
//! layer norm, dropout with an explicit train flag and a seed), tokenization with our own
//! truncation and padding, and Hugging Face checkpoint directories in and out.

mod checkpoint;
mod config;
mod encoder;
mod error;
mod family;
mod kernels;
mod tokenizer;

pub use checkpoint::{save_safetensors, Checkpoint, ClassifierOptions, Weights};
pub use config::{EncoderConfig, Pooling, Precision};
pub use encoder::{pool, Dropout, EncoderClassifier, McDepth, ModelOutput, StochasticPass};
pub use error::{ModelError, Result};
pub use family::Family;
pub use tokenizer::{trained_max_length, Batch, TextTokenizer};

#[cfg(test)]
mod family_tests;
#[cfg(test)]
mod tests;
