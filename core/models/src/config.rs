//! `config.json` of a Hugging Face encoder checkpoint (BERT, RoBERTa, XLM-R, DistilBERT), read
//! under BERT's key names whatever the family writes.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::{family::MEAN_POOLED_PREFIX, Family, ModelError, Result};

/// The module transformers imports a mean-pooled export's classes from (`<module>.py` beside
/// the weights).
pub(crate) const MODELING_MODULE: &str = "modeling_workbench";

/// The config.json key of a mean-pooled export's longest input, in tokens.
const MAX_INPUT_LENGTH: &str = "max_input_length";

fn default_eps() -> f64 {
    1e-12
}

fn default_type_vocab() -> usize {
    2
}

/// How the classifier head reads the encoder's last layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The first token through the pooler dense layer and tanh, as transformers'
    /// `BertForSequenceClassification`.
    Cls,
    /// The mean of the last layer over the attention mask, as sentence-transformers models
    /// (the pinned MiniLM among them) were trained to be read.
    Mean,
}

/// The precision of an inference model's linear layers (see [`crate::EncoderClassifier::set_precision`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    /// Weights and activations rounded to bf16 for each matrix product, sums in fp32; on CPUs
    /// with AVX512-BF16 only (elsewhere the layers stay fp32).
    Bf16,
}

impl Precision {
    /// The precision that runs where bf16 kernels are (`bf16_runs`) or are not.
    pub fn in_effect(self, bf16_runs: bool) -> Precision {
        if bf16_runs {
            self
        } else {
            Precision::Fp32
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision `{other}`: use fp32 or bf16")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl std::str::FromStr for Pooling {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cls" => Ok(Pooling::Cls),
            "mean" => Ok(Pooling::Mean),
            other => Err(format!("unknown pooling `{other}`: use cls or mean")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
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
    /// The head's pooling, written by our export so that a checkpoint reloads identically;
    /// transformers ignores the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<Pooling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label2id: Option<BTreeMap<String, usize>>,
    /// Every other key (`model_type` among them), kept so that a saved config round-trips.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// From `model_type`.
    #[serde(skip)]
    pub family: Family,
}

fn default_hidden_act() -> String {
    "gelu".into()
}

impl EncoderConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::file(path, e))?;
        let mut keys: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
            .map_err(|e| ModelError::file(path, format!("not a JSON object of settings: {e}")))?;
        let exported_type = keys.get("model_type").and_then(serde_json::Value::as_str);
        if let Some(own) = exported_type.and_then(|t| t.strip_prefix(MEAN_POOLED_PREFIX)).map(str::to_string) {
            // Our mean-pooled export, read as the family's own checkpoint; saving writes the
            // export's type, code pointer and length again.
            keys.insert("model_type".into(), own.into());
            keys.remove("auto_map");
            keys.remove(MAX_INPUT_LENGTH);
            keys.entry("pooling").or_insert_with(|| "mean".into());
        }
        let model_type = keys.get("model_type").and_then(serde_json::Value::as_str);
        let family = Family::from_model_type(model_type).map_err(|reason| ModelError::file(path, reason))?;
        family.rename_to_bert_keys(&mut keys);
        let mut config: EncoderConfig = serde_json::from_value(keys.into())
            .map_err(|e| ModelError::file(path, format!("not a {} config.json: {e}", family.model_type())))?;
        config.family = family;
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
        config.check_labels().map_err(|reason| ModelError::file(path, reason))?;
        Ok(config)
    }

    /// `id2label` must number its labels 0..n without gaps, name each once, and agree with
    /// `label2id` where both are given: otherwise a class would silently vanish from the union.
    fn check_labels(&self) -> std::result::Result<(), String> {
        let Some(id2label) = &self.id2label else { return Ok(()) };
        let mut ids = Vec::with_capacity(id2label.len());
        for id in id2label.keys() {
            ids.push(id.parse::<usize>().map_err(|_| format!("id2label key `{id}` is not a class index"))?);
        }
        ids.sort_unstable();
        if let Some(missing) = (0..ids.len()).find(|&i| ids[i] != i) {
            return Err(format!(
                "id2label has no class {missing}: indices must run from 0 to {} without gaps",
                ids.len() - 1
            ));
        }
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (id, label) in id2label {
            if let Some(first) = seen.insert(label, id) {
                return Err(format!(
                    "id2label names `{label}` twice (classes {first} and {id}): every class needs its own label"
                ));
            }
        }
        if let Some(label2id) = &self.label2id {
            for (id, label) in id2label {
                match label2id.get(label) {
                    Some(&other) if other.to_string() != *id => {
                        return Err(format!("label2id gives `{label}` class {other}, but id2label gives it class {id}"))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
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

    /// The pooling of the checkpoint directory `dir` holding this config: config.json's
    /// `pooling`, else a sentence-transformers `1_Pooling/config.json`, else `cls`.
    pub fn pooling_in(&self, dir: &Path) -> Result<Pooling> {
        if let Some(pooling) = self.pooling {
            return Ok(pooling);
        }
        let path = dir.join("1_Pooling").join("config.json");
        if !path.is_file() {
            return Ok(Pooling::Cls);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::file(&path, e))?;
        let modes: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
            .map_err(|e| ModelError::file(&path, format!("not a sentence-transformers pooling config: {e}")))?;
        let on = |key: &str| modes.get(key).and_then(serde_json::Value::as_bool).unwrap_or(false);
        match (on("pooling_mode_mean_tokens"), on("pooling_mode_cls_token")) {
            (true, false) => Ok(Pooling::Mean),
            (false, true) => Ok(Pooling::Cls),
            _ => Err(ModelError::file(
                &path,
                "asks for a pooling other than exactly one of mean or cls tokens; \
                 set `pooling = \"mean\"` or `\"cls\"` for this model to choose one",
            )),
        }
    }

    /// The longest input in tokens: the position table less the positions a family skips.
    pub fn max_tokens(&self) -> usize {
        let first = self.family.first_position(self.pad_token_id) as usize;
        self.max_position_embeddings.saturating_sub(first)
    }

    /// config.json as transformers reads it: in the family's keys, for its native
    /// `...ForSequenceClassification` under `cls` pooling; under `mean` pooling, for the class of
    /// `modeling_workbench.py` (see [`MEAN_POOLED_PREFIX`]), which cuts inputs to
    /// `max_input_length` tokens as the model was trained.
    pub fn to_json(&self, max_input_length: usize) -> String {
        let serde_json::Value::Object(mut keys) = serde_json::to_value(self).expect("a config serializes") else {
            unreachable!("a struct serializes to an object")
        };
        self.family.rename_to_own_keys(&mut keys);
        let model_type = keys
            .entry("model_type")
            .or_insert_with(|| self.family.model_type().into())
            .as_str()
            .unwrap_or_default()
            .to_string();
        let stem = self.family.class_stem(&model_type);
        if self.pooling == Some(Pooling::Mean) {
            let class = format!("Workbench{stem}ForSequenceClassification");
            keys.insert("model_type".into(), format!("{MEAN_POOLED_PREFIX}{model_type}").into());
            keys.insert("architectures".into(), serde_json::json!([class]));
            keys.insert(
                "auto_map".into(),
                serde_json::json!({
                    "AutoConfig": format!("{MODELING_MODULE}.Workbench{stem}Config"),
                    "AutoModelForSequenceClassification": format!("{MODELING_MODULE}.{class}"),
                }),
            );
            keys.insert(MAX_INPUT_LENGTH.into(), max_input_length.into());
        } else {
            keys.insert("architectures".into(), serde_json::json!([format!("{stem}ForSequenceClassification")]));
        }
        serde_json::to_string_pretty(&keys).expect("a config serializes")
    }

    pub fn classifier_dropout(&self) -> f32 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }
}
