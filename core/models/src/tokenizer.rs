//! Tokenization with the tokenizers crate, from `tokenizer.json` or `vocab.txt`. Padding and
//! truncation are our own (checkpoints such as MiniLM ship fixed padding to 128 switched on).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use tokenizers::{
    models::wordpiece::WordPiece, normalizers::BertNormalizer, pre_tokenizers::bert::BertPreTokenizer,
    processors::bert::BertProcessing, Tokenizer,
};

use crate::{ModelError, Result};

/// A batch of encoded texts: token ids and attention mask, `[B, T]` each, padded to the
/// longest text of the batch.
pub struct Batch {
    pub ids: Tensor,
    pub mask: Tensor,
}

pub struct TextTokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
    max_length: usize,
    pad: u32,
}

/// The padding token's name in the vocabularies of the supported families.
const PAD_TOKENS: [&str; 2] = ["[PAD]", "<pad>"];

/// The length a checkpoint's texts are cut to, from its tokenizer_config.json's
/// `model_max_length` (which the workbench writes; Hugging Face checkpoints often say 512 or a
/// huge placeholder), if it has one.
pub fn trained_max_length(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    let length = config.get("model_max_length")?.as_f64()?;
    (length >= 2.0).then(|| length.min(usize::MAX as f64) as usize)
}

/// transformers' special-token keys with the tokens they name in the supported families.
const SPECIAL_TOKENS: [(&str, &[&str]); 7] = [
    ("cls_token", &["[CLS]", "<s>"]),
    ("sep_token", &["[SEP]", "</s>"]),
    ("pad_token", &["[PAD]", "<pad>"]),
    ("unk_token", &["[UNK]", "<unk>"]),
    ("mask_token", &["[MASK]", "<mask>"]),
    ("bos_token", &["<s>"]),
    ("eos_token", &["</s>"]),
];

/// A text cut to `max_length` tokens must keep room for the start and end tokens.
fn check_room(path: &Path, max_length: usize) -> Result<()> {
    if max_length < 2 {
        return Err(ModelError::file(
            path,
            format!("max_length {max_length} leaves no room for the start and end tokens"),
        ));
    }
    Ok(())
}

impl TextTokenizer {
    /// Reads `tokenizer.json`, or builds a BERT WordPiece tokenizer from `vocab.txt`.
    pub fn from_dir(dir: &Path, max_length: usize) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        let vocab = dir.join("vocab.txt");
        let (mut tokenizer, path) = if json.is_file() {
            (
                Tokenizer::from_file(&json)
                    .map_err(|e| ModelError::file(&json, format!("unreadable tokenizer: {e}")))?,
                json,
            )
        } else if vocab.is_file() {
            (Self::from_vocab(&vocab)?, vocab)
        } else {
            return Err(ModelError::file(dir, "has neither tokenizer.json nor vocab.txt"));
        };
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| ModelError::file(&path, format!("cannot switch truncation off: {e}")))?;
        let pad = PAD_TOKENS.iter().find_map(|token| tokenizer.token_to_id(token)).ok_or_else(|| {
            ModelError::TokenizerMismatch {
                path: path.clone(),
                reason: format!("it has no padding token ({})", PAD_TOKENS.join(" or ")),
            }
        })?;
        check_room(&path, max_length)?;
        Ok(Self { tokenizer, path, max_length, pad })
    }

    fn from_vocab(vocab: &Path) -> Result<Tokenizer> {
        let file = vocab.to_str().ok_or_else(|| ModelError::file(vocab, "path is not valid UTF-8"))?;
        let wordpiece = WordPiece::from_file(file)
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| ModelError::file(vocab, format!("unreadable vocabulary: {e}")))?;
        let mut tokenizer = Tokenizer::new(wordpiece);
        let token = |t: &str| {
            tokenizer.token_to_id(t).map(|id| (t.to_string(), id)).ok_or_else(|| ModelError::TokenizerMismatch {
                path: vocab.into(),
                reason: format!("the vocabulary has no `{t}`"),
            })
        };
        let (sep, cls) = (token("[SEP]")?, token("[CLS]")?);
        let built = |e: tokenizers::Error| ModelError::file(vocab, format!("cannot build a BERT tokenizer: {e}"));
        tokenizer.with_normalizer(Some(BertNormalizer::new(true, true, None, true))).map_err(built)?;
        tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
        tokenizer.with_post_processor(Some(BertProcessing::new(sep, cls)));
        Ok(tokenizer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The same tokenizer cutting texts to `max_length` tokens instead.
    pub fn with_max_length(&self, max_length: usize) -> Result<Self> {
        check_room(&self.path, max_length)?;
        Ok(Self { tokenizer: self.tokenizer.clone(), path: self.path.clone(), max_length, pad: self.pad })
    }

    /// Token ids of one text with the tokenizer's special tokens (`[CLS] ... [SEP]`,
    /// `<s> ... </s>`), cut to `max_length` keeping the final special token, as transformers
    /// truncates.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.tokenizer.encode(text, true).map_err(|e| ModelError::Tokenize(e.to_string()))?;
        let mut ids = encoding.get_ids().to_vec();
        if ids.len() > self.max_length {
            let end = (encoding.get_special_tokens_mask().last() == Some(&1)).then(|| ids[ids.len() - 1]);
            ids.truncate(self.max_length - usize::from(end.is_some()));
            ids.extend(end);
        }
        Ok(ids)
    }

    /// Encodes and pads a batch of texts.
    pub fn batch<S: AsRef<str>>(&self, texts: &[S], device: &Device) -> Result<Batch> {
        let encoded = texts.iter().map(|t| self.encode(t.as_ref())).collect::<Result<Vec<_>>>()?;
        let length = encoded.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(texts.len() * length);
        let mut mask = Vec::with_capacity(texts.len() * length);
        for row in &encoded {
            ids.extend(row.iter().copied().chain(std::iter::repeat_n(self.pad, length - row.len())));
            mask.extend((0..length).map(|i| if i < row.len() { 1f32 } else { 0.0 }));
        }
        Ok(Batch {
            ids: Tensor::from_vec(ids, (texts.len(), length), device)?,
            mask: Tensor::from_vec(mask, (texts.len(), length), device)?,
        })
    }

    /// Writes tokenizer.json (with padding and truncation off) and the tokenizer_config.json
    /// transformers reads it with: the generic class that follows tokenizer.json exactly (a
    /// family's own class rebuilds its pipeline, which can tokenize differently), the length
    /// texts are cut to, and the special tokens.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join("tokenizer.json");
        self.tokenizer
            .save(&path, false)
            .map_err(|e| ModelError::file(&path, format!("cannot write tokenizer: {e}")))?;
        let mut config = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": self.max_length,
            "padding_side": "right",
            "truncation_side": "right",
            "clean_up_tokenization_spaces": false,
        });
        for (key, candidates) in SPECIAL_TOKENS {
            if let Some(token) = candidates.iter().find(|t| self.tokenizer.token_to_id(t).is_some()) {
                config[key] = (*token).into();
            }
        }
        let path = dir.join("tokenizer_config.json");
        let text = serde_json::to_string_pretty(&config).expect("a JSON object serializes");
        std::fs::write(&path, text).map_err(|e| ModelError::file(&path, e))
    }
}
