//! `config.json` of a Hugging Face BERT-family checkpoint.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::{ModelError, Result};

fn default_eps() -> f64 {
    1e-12
}

fn default_type_vocab() -> usize {
    2
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub hidden_dropout_prob: f32,
    #[serde(default)]
    pub attention_probs_dropout_prob: f32,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: u32,
    /// Dropout before the classifier; HF falls back to `hidden_dropout_prob`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_dropout: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label2id: Option<BTreeMap<String, usize>>,
    /// Every other key, kept so that a saved config round-trips.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_hidden_act() -> String {
    "gelu".into()
}

impl BertConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::file(path, e))?;
        let config: BertConfig =
            serde_json::from_str(&text).map_err(|e| ModelError::file(path, format!("not a BERT config.json: {e}")))?;
        if config.num_attention_heads == 0 || !config.hidden_size.is_multiple_of(config.num_attention_heads) {
            return Err(ModelError::file(
                path,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    config.hidden_size, config.num_attention_heads
                ),
            ));
        }
        if config.hidden_act != "gelu" {
            return Err(ModelError::file(
                path,
                format!("hidden_act `{}` is not supported (only gelu)", config.hidden_act),
            ));
        }
        Ok(config)
    }

    /// Label names in logit order, from `id2label`.
    pub fn labels(&self) -> Option<Vec<String>> {
        let id2label = self.id2label.as_ref()?;
        let mut labels: Vec<(usize, &String)> =
            id2label.iter().filter_map(|(id, l)| id.parse().ok().map(|i| (i, l))).collect();
        labels.sort();
        Some(labels.into_iter().map(|(_, l)| l.clone()).collect())
    }

    pub fn set_labels(&mut self, labels: &[String]) {
        self.id2label = Some(labels.iter().enumerate().map(|(i, l)| (i.to_string(), l.clone())).collect());
        self.label2id = Some(labels.iter().enumerate().map(|(i, l)| (l.clone(), i)).collect());
    }

    pub fn classifier_dropout(&self) -> f32 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }
}
