//! Hugging Face checkpoint directories: `config.json`, `model.safetensors` (encoder tensor names
//! with or without the family's prefix, `bert.`, `roberta.` or `distilbert.`, optionally a
//! classification head with `id2label`) and `tokenizer.json` or `vocab.txt`.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use candle_core::{Device, Tensor};

use crate::{
    config::MODELING_MODULE, EncoderClassifier, EncoderConfig, Family, ModelError, Pooling, Result, TextTokenizer,
};

/// The tensors of a `model.safetensors`, by name without the family's prefix.
pub struct Weights {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    pub fn load(path: &Path, family: Family, device: &Device) -> Result<Self> {
        if !path.is_file() {
            let pickle = path.with_file_name("pytorch_model.bin");
            if pickle.is_file() {
                // Unpickling runs arbitrary code: the conversion is the user's call, with transformers.
                let dir = pickle.parent().unwrap_or(Path::new(".")).display();
                return Err(ModelError::file(
                    &pickle,
                    format!(
                        "a pickle checkpoint is not read (loading one can run code); convert it to \
                         model.safetensors with transformers: python3 -c \"from transformers import \
                         AutoModelForSequenceClassification as M; M.from_pretrained('{dir}')\
                         .save_pretrained('{dir}', safe_serialization=True)\""
                    ),
                ));
            }
            return Err(ModelError::file(path, "missing: a checkpoint needs model.safetensors"));
        }
        let tensors = candle_core::safetensors::load(path, device)
            .map_err(|e| ModelError::file(path, format!("not a readable safetensors file ({e})")))?;
        let tensors = tensors
            .into_iter()
            .map(|(name, tensor)| {
                (name.strip_prefix(family.prefix()).map_or_else(|| name.clone(), str::to_string), tensor)
            })
            .collect();
        Ok(Self { path: path.into(), tensors })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// A tensor that must exist with `shape` (as `config.json` implies), as f32.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let problem = |problem: String| ModelError::Weights { path: self.path.clone(), tensor: name.into(), problem };
        let tensor = self.tensors.get(name).ok_or_else(|| problem("is missing".into()))?;
        if tensor.dims() != shape {
            return Err(problem(format!("has shape {:?}, but config.json implies {shape:?}", tensor.dims())));
        }
        Ok(tensor.to_dtype(candle_core::DType::F32)?)
    }
}

/// How to build a classifier from a checkpoint.
#[derive(Debug, Clone)]
pub struct ClassifierOptions {
    /// Label names in logit order.
    pub labels: Vec<String>,
    /// Keep only the first N encoder layers.
    pub layers: Option<usize>,
    /// Seed of freshly initialised parameters (a new head).
    pub seed: u64,
    /// Build the parameters as trainable variables.
    pub trainable: bool,
    /// Keep the word-embedding table fixed while training: it is most of a small model's
    /// parameters, and updating it dominated the cost of a step.
    pub freeze_word_embeddings: bool,
    /// The head's pooling; `None` takes the checkpoint's own (see [`EncoderConfig::pooling_in`]).
    pub pooling: Option<Pooling>,
}

/// An opened checkpoint directory.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: EncoderConfig,
    pub weights: Weights,
    pub tokenizer: TextTokenizer,
    /// The pooling the checkpoint asks for.
    pub pooling: Pooling,
}

impl Checkpoint {
    /// Opens `dir`, checking that its tokenizer fits the model's vocabulary.
    pub fn open(dir: &Path, max_length: usize, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::file(dir, "not a checkpoint directory (it does not exist)"));
        }
        let config = EncoderConfig::load(&dir.join("config.json"))?;
        let weights = Weights::load(&dir.join("model.safetensors"), config.family, device)?;
        let tokenizer = TextTokenizer::from_dir(dir, max_length.min(config.max_tokens()))?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(ModelError::TokenizerMismatch {
                path: tokenizer.path().into(),
                reason: format!(
                    "it has {} tokens but the model's embeddings have {} rows (config.json vocab_size)",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            });
        }
        let pooling = config.pooling_in(dir)?;
        Ok(Self { dir: dir.into(), config, weights, tokenizer, pooling })
    }

    /// The checkpoint's own labels (`id2label`), when it has a classification head.
    pub fn labels(&self) -> Option<Vec<String>> {
        self.config.labels().filter(|_| self.weights.contains(&self.classifier_weight()))
    }

    /// The name of the tensor of the head's last layer, in this family and pooling.
    fn classifier_weight(&self) -> String {
        format!("{}.weight", self.config.family.head(self.pooling).classifier)
    }

    /// The checkpoint as a classifier over its own labels.
    pub fn classifier(&self, layers: Option<usize>, trainable: bool, device: &Device) -> Result<EncoderClassifier> {
        let labels = self.labels().ok_or_else(|| {
            let weight = self.classifier_weight();
            ModelError::file(&self.dir, format!("has no classification head (config.json id2label and {weight})"))
        })?;
        let options =
            ClassifierOptions { labels, layers, seed: 0, trainable, freeze_word_embeddings: false, pooling: None };
        self.build(&options, true, device)
    }

    /// The checkpoint's encoder with a head over `options.labels`: the checkpoint's own head
    /// when its labels are the same, a fresh seeded one otherwise.
    pub fn classifier_for(&self, options: &ClassifierOptions, device: &Device) -> Result<EncoderClassifier> {
        let reuse_head = self.labels().as_deref() == Some(options.labels.as_slice());
        self.build(options, reuse_head, device)
    }

    fn build(&self, options: &ClassifierOptions, reuse_head: bool, device: &Device) -> Result<EncoderClassifier> {
        let mut config = self.config.clone();
        config.pooling = Some(options.pooling.unwrap_or(self.pooling));
        EncoderClassifier::build(&self.weights, config, options, reuse_head, device)
    }

    /// Maps label names to the checkpoint's logit indices, refusing one it does not know.
    pub fn label_indices(&self, labels: &[String]) -> Result<Vec<usize>> {
        let own = self.labels().unwrap_or_default();
        labels
            .iter()
            .map(|label| {
                own.iter().position(|l| l == label).ok_or_else(|| ModelError::UnknownLabel {
                    label: label.clone(),
                    path: self.dir.join("config.json"),
                    known: own.join(", "),
                })
            })
            .collect()
    }
}

/// Writes `tensors` to `path` as safetensors: written beside and renamed, so that a killed save
/// never leaves a truncated file, and created with the user's umask (candle's own writer goes
/// through a private temporary file and leaves mode 0600).
pub fn save_safetensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let bytes = safetensors::serialize(tensors, None).map_err(|e| ModelError::file(path, e))?;
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    if let Err(error) = std::fs::write(&partial, bytes) {
        // A full disk leaves no partial file behind.
        let _ = std::fs::remove_file(&partial);
        return Err(ModelError::file(path, error));
    }
    std::fs::rename(&partial, path).map_err(|e| ModelError::file(path, e))
}

/// transformers' code for mean-pooled checkpoints, written beside each one.
const MODELING_CODE: &str = include_str!("modeling_workbench.py");

impl EncoderClassifier {
    /// Writes a Hugging Face sequence-classification directory of the model's family that
    /// transformers reads with our predictions or refuses: model.safetensors (encoder under the
    /// family's prefix, the head without), config.json in the family's keys with id2label and
    /// label2id (for a mean-pooled model, its own model type and `modeling_workbench.py`; see
    /// [`EncoderConfig::to_json`]), tokenizer.json and tokenizer_config.json.
    pub fn save(&self, dir: &Path, tokenizer: &TextTokenizer) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::file(dir, e))?;
        let tensors: HashMap<String, Tensor> = self
            .params
            .iter()
            .map(|(name, tensor)| {
                let family = self.config.family;
                let key = if family.is_head_tensor(name) { name.clone() } else { format!("{}{name}", family.prefix()) };
                (key, tensor.clone())
            })
            .collect();
        save_safetensors(&tensors, &dir.join("model.safetensors"))?;
        let write = |name: &str, contents: &str| {
            let path = dir.join(name);
            std::fs::write(&path, contents).map_err(|e| ModelError::file(&path, e))
        };
        write("config.json", &self.config.to_json(tokenizer.max_length()))?;
        let modeling = dir.join(format!("{MODELING_MODULE}.py"));
        if self.config.pooling == Some(Pooling::Mean) {
            write(&format!("{MODELING_MODULE}.py"), MODELING_CODE)?;
        } else if modeling.is_file() {
            std::fs::remove_file(&modeling).map_err(|e| ModelError::file(&modeling, e))?;
        }
        tokenizer.save(dir)
    }
}
