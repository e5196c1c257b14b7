//! The checkpoint families the encoder reads. BERT, RoBERTa (XLM-R shares its code) and
//! DistilBERT are the same post-norm transformer encoder; they differ in tensor names, position
//! numbering, token-type embeddings and the classification head, and everything that differs
//! lives here.

use serde_json::{Map, Value};

use crate::Pooling;

/// The `model_type` of a mean-pooled export is the family's own after this prefix: transformers
/// knows no such type, so it refuses the checkpoint unless told to run the `modeling_workbench.py`
/// written beside it (a native class would read it with a random pooler on the first token).
pub const MEAN_POOLED_PREFIX: &str = "workbench-mean-pooled-";

/// A model family, from config.json's `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    #[default]
    Bert,
    /// RoBERTa and XLM-RoBERTa: positions numbered after the padding id, one token type, a
    /// two-layer head on the first token.
    Roberta,
    /// DistilBERT: other tensor and config names, no token types, no dropout after the
    /// attention output, a dense + ReLU head.
    DistilBert,
}

/// What the classification head applies to the pooled vector before its last linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Tanh,
    Relu,
}

/// The parameter names and shape of a family's classification head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLayout {
    /// The dense layer between pooling and the classifier, and its activation.
    pub dense: Option<(&'static str, Activation)>,
    /// Dropout also before the dense layer (RoBERTa), not only before the classifier.
    pub dropout_before_dense: bool,
    pub classifier: &'static str,
}

/// DistilBERT's config.json keys with the BERT keys they mean.
const DISTILBERT_KEYS: [(&str, &str); 8] = [
    ("dim", "hidden_size"),
    ("n_layers", "num_hidden_layers"),
    ("n_heads", "num_attention_heads"),
    ("hidden_dim", "intermediate_size"),
    ("dropout", "hidden_dropout_prob"),
    ("attention_dropout", "attention_probs_dropout_prob"),
    ("activation", "hidden_act"),
    ("seq_classif_dropout", "classifier_dropout"),
];

/// DistilBERT's encoder tensors (after `transformer.layer.N.`) with the BERT names they mean.
const DISTILBERT_LAYER_PARTS: [(&str, &str); 8] = [
    ("attention.self.query", "attention.q_lin"),
    ("attention.self.key", "attention.k_lin"),
    ("attention.self.value", "attention.v_lin"),
    ("attention.output.dense", "attention.out_lin"),
    ("attention.output.LayerNorm", "sa_layer_norm"),
    ("intermediate.dense", "ffn.lin1"),
    ("output.dense", "ffn.lin2"),
    ("output.LayerNorm", "output_layer_norm"),
];

impl Family {
    /// The family of a config.json's `model_type` (none: BERT, as older BERT checkpoints omit it).
    pub fn from_model_type(model_type: Option<&str>) -> Result<Self, String> {
        match model_type {
            None | Some("bert") => Ok(Family::Bert),
            Some("roberta" | "xlm-roberta") => Ok(Family::Roberta),
            Some("distilbert") => Ok(Family::DistilBert),
            Some(other) => Err(format!(
                "model_type `{other}` is not supported by our encoder (supported: bert, roberta, xlm-roberta, \
                 distilbert); run it in PyTorch and join it as a `signals-file` teacher (scripts/write_signals.py, \
                 docs/signals.md)"
            )),
        }
    }

    /// The prefix of the encoder's tensor names in a `...ForSequenceClassification` checkpoint.
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Family::Bert => "bert.",
            Family::Roberta => "roberta.",
            Family::DistilBert => "distilbert.",
        }
    }

    /// The checkpoint name of encoder layer `layer`'s tensor `part`, given by its BERT name
    /// (`attention.self.query`, ...).
    pub(crate) fn layer_tensor(self, layer: usize, part: &str) -> String {
        match self {
            Family::DistilBert => {
                let own = DISTILBERT_LAYER_PARTS
                    .iter()
                    .find(|(bert, _)| *bert == part)
                    .map_or(part, |(_, distilbert)| *distilbert);
                format!("transformer.layer.{layer}.{own}")
            }
            Family::Bert | Family::Roberta => format!("encoder.layer.{layer}.{part}"),
        }
    }

    pub(crate) fn has_token_types(self) -> bool {
        self != Family::DistilBert
    }

    /// Dropout on the attention output before its residual (DistilBERT has none there).
    pub(crate) fn attention_output_dropout(self) -> bool {
        self != Family::DistilBert
    }

    /// The position id of the first token: RoBERTa numbers positions after the padding id.
    pub(crate) fn first_position(self, pad_token_id: u32) -> u32 {
        match self {
            Family::Roberta => pad_token_id + 1,
            Family::Bert | Family::DistilBert => 0,
        }
    }

    /// Whether tensor `name` belongs to the classification head, which a checkpoint stores
    /// without the family's prefix and which a new label set replaces. BERT's pooler belongs
    /// to the encoder (`bert.pooler.dense`); RoBERTa's and DistilBERT's dense layers to the head.
    pub(crate) fn is_head_tensor(self, name: &str) -> bool {
        name.starts_with("classifier") || name.starts_with("pre_classifier")
    }

    /// The head for `pooling`: the family's own head for `cls`; `mean` pooling (ours, for
    /// sentence-embedding models) goes straight into a `classifier` layer in every family.
    pub(crate) fn head(self, pooling: Pooling) -> HeadLayout {
        let plain = HeadLayout { dense: None, dropout_before_dense: false, classifier: "classifier" };
        match (pooling, self) {
            (Pooling::Mean, _) => plain,
            (Pooling::Cls, Family::Bert) => HeadLayout { dense: Some(("pooler.dense", Activation::Tanh)), ..plain },
            (Pooling::Cls, Family::Roberta) => HeadLayout {
                dense: Some(("classifier.dense", Activation::Tanh)),
                dropout_before_dense: true,
                classifier: "classifier.out_proj",
            },
            (Pooling::Cls, Family::DistilBert) => {
                HeadLayout { dense: Some(("pre_classifier", Activation::Relu)), ..plain }
            }
        }
    }

    /// The transformers class a `cls`-pooled export is read back with, by its stem (`Bert`,
    /// `XLMRoberta`, ...): the native `<stem>ForSequenceClassification`, or for mean pooling
    /// `Workbench<stem>ForSequenceClassification` of `modeling_workbench.py`.
    pub(crate) fn class_stem(self, model_type: &str) -> &'static str {
        match (self, model_type) {
            (Family::Roberta, "xlm-roberta") => "XLMRoberta",
            (Family::Roberta, _) => "Roberta",
            (Family::DistilBert, _) => "DistilBert",
            (Family::Bert, _) => "Bert",
        }
    }

    /// The family's own `model_type` name, written when a config has none.
    pub(crate) fn model_type(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::Roberta => "roberta",
            Family::DistilBert => "distilbert",
        }
    }

    /// Renames a config.json's keys to the BERT keys the encoder config reads.
    pub(crate) fn rename_to_bert_keys(self, config: &mut Map<String, Value>) {
        if self == Family::DistilBert {
            rename_keys(config, DISTILBERT_KEYS.iter().copied());
            config.insert("type_vocab_size".into(), Value::from(0));
        }
    }

    /// Renames BERT keys back to the family's own, for an export transformers reads.
    pub(crate) fn rename_to_own_keys(self, config: &mut Map<String, Value>) {
        if self == Family::DistilBert {
            rename_keys(config, DISTILBERT_KEYS.iter().map(|&(own, bert)| (bert, own)));
            config.remove("type_vocab_size");
        }
    }
}

fn rename_keys<'a>(config: &mut Map<String, Value>, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    for (from, to) in pairs {
        if let Some(value) = config.remove(from) {
            config.insert(to.into(), value);
        }
    }
}
