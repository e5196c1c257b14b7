//! Teacher signals, computed once and cached content-addressed: the deterministic logits (and
//! hidden states) of a teacher over a list of texts, and the samples of an estimator's plan.
//! The key hashes the teacher's identity (component, parameters and the contents of the files
//! they name), the texts, the sampling plan and the MC seed.

use std::path::{Path, PathBuf};

use abi_stable::std_types::RString;
use candle_core::{Device, Tensor as CandleTensor};
use sha2::{Digest, Sha256};
use workbench_plugin_api::{ForwardRequest, Sampling, SamplingPlan, TeacherInfo, Tensor};

use crate::{
    config::{self, ComponentChoice},
    files::FileLock,
    host::TeacherHandle,
    progress::Progress,
    training::loss::to_candle,
    Error, Result,
};

/// Hashes a teacher's identity: its plugin library's sha256, its component, parameters, and
/// every file its text parameters name (a checkpoint directory is hashed file by file, leaving
/// out the training records, which hold wall-clock times).
pub fn teacher_hash(choice: &ComponentChoice, plugin_sha256: &str) -> Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(plugin_sha256.as_bytes());
    hasher.update(choice.component.as_bytes());
    for param in choice.params.entries.iter() {
        hasher.update(param.name.as_bytes());
        hasher.update(param.value.to_string().as_bytes());
        for path in config::texts(&param.value).into_iter().map(Path::new).filter(|p| p.exists()) {
            hash_path(&mut hasher, path)?;
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}

fn hash_path(hasher: &mut Sha256, path: &Path) -> Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(Error::io(format!("reading {}", path.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_none_or(|x| x != "jsonl") && !p.ends_with(crate::training::teach::RECORD))
            .collect();
        entries.sort();
        for entry in entries {
            hasher.update(entry.file_name().unwrap_or_default().as_encoded_bytes());
            hash_path(hasher, &entry)?;
        }
        Ok(())
    } else {
        let bytes = std::fs::read(path).map_err(Error::io(format!("hashing {}", path.display())))?;
        hasher.update(&bytes);
        Ok(())
    }
}

/// A plan in the cache key, spelt out so that signals cached before `lower_passes` existed
/// keep their keys.
fn plan_key(plan: SamplingPlan) -> String {
    match plan {
        SamplingPlan::Deterministic => "Deterministic".into(),
        SamplingPlan::Members => "Members".into(),
        SamplingPlan::Stochastic { passes, top_layers, lower_passes: 0 } => {
            format!("Stochastic {{ passes: {passes}, top_layers: {top_layers} }}")
        }
        SamplingPlan::Stochastic { passes, top_layers, lower_passes } => {
            format!("Stochastic {{ passes: {passes}, top_layers: {top_layers}, lower_passes: {lower_passes} }}")
        }
        share @ SamplingPlan::StochasticShare { .. } => format!("{share:?}"),
    }
}

/// Hash of an ordered list of texts.
pub fn texts_hash(texts: &[RString]) -> String {
    strings_hash(texts.iter().map(RString::as_str))
}

/// Hash of an ordered sequence of strings, each prefixed by its length so that no two
/// sequences share a hash by splitting differently.
pub fn strings_hash<'a>(strings: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    for text in strings {
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    format!("{:x}", hasher.finalize())
}

/// What one teacher produced over all texts.
#[derive(Debug, Clone)]
pub struct TeacherSignalSet {
    /// `[S, N, L]`: S = 1 for the deterministic pass.
    pub logits: Tensor,
    /// `[N, H]` when asked for.
    pub hidden: Option<Tensor>,
}

/// Whether a signal came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    Computed,
    Cached,
}

pub struct SignalCache {
    dir: PathBuf,
}

fn save(path: &Path, signals: &TeacherSignalSet) -> Result<()> {
    let device = Device::Cpu;
    let mut tensors = std::collections::HashMap::new();
    tensors.insert("logits".to_string(), to_candle(&signals.logits, &device)?);
    if let Some(hidden) = &signals.hidden {
        tensors.insert("hidden".to_string(), to_candle(hidden, &device)?);
    }
    Ok(workbench_models::save_safetensors(&tensors, path)?)
}

fn plain(tensor: &CandleTensor) -> Result<Tensor> {
    Ok(Tensor::new(tensor.dims().to_vec(), tensor.flatten_all()?.to_vec1::<f32>()?).expect("same shape"))
}

/// Reads a cache entry; `Err` carries why it is unusable.
fn load(path: &Path, texts: usize, labels: usize, want_hidden: bool) -> std::result::Result<TeacherSignalSet, String> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| e.to_string())?;
    let logits = plain(tensors.get("logits").ok_or("it has no logits")?).map_err(|e| e.to_string())?;
    let hidden = tensors.get("hidden").map(plain).transpose().map_err(|e| e.to_string())?;
    let shape = logits.shape();
    if shape.len() != 3 || shape[1] != texts || shape[2] != labels || (want_hidden && hidden.is_none()) {
        return Err(format!("logits of shape {shape:?} do not fit {texts} texts and {labels} labels"));
    }
    Ok(TeacherSignalSet { logits, hidden })
}

impl SignalCache {
    pub fn new(cache: &Path) -> Self {
        Self { dir: cache.join("signals") }
    }

    /// The teacher's signals for `sampling` over `texts`, from the cache or computed (in
    /// chunks, with progress) and stored.
    #[allow(clippy::too_many_arguments)]
    pub fn get(
        &self,
        name: &str,
        teacher: &mut TeacherHandle,
        info: &TeacherInfo,
        identity: &str,
        texts: &[RString],
        plan: SamplingPlan,
        mc_seed: u64,
        want_hidden: bool,
    ) -> Result<(TeacherSignalSet, Provenance)> {
        let mut hasher = Sha256::new();
        hasher.update(identity.as_bytes());
        hasher.update(texts_hash(texts).as_bytes());
        hasher.update(
            format!(
                "{}/{}/{want_hidden}",
                plan_key(plan),
                if plan == SamplingPlan::Deterministic { 0 } else { mc_seed }
            )
            .as_bytes(),
        );
        let key = format!("{:x}", hasher.finalize());
        let path = self.dir.join(format!("{key}.safetensors"));
        // One process computes an entry; another that wants it waits and then reads it.
        let _lock = FileLock::acquire(&self.dir.join("locks").join(&key), &format!("teacher `{name}` signals"))?;
        if path.is_file() {
            match load(&path, texts.len(), info.labels.len(), want_hidden) {
                Ok(signals) => return Ok((signals, Provenance::Cached)),
                Err(reason) => {
                    tracing::warn!(entry = %path.display(), "removing a corrupt cache entry ({reason}) and computing it again");
                    std::fs::remove_file(&path).map_err(Error::io(format!("removing {}", path.display())))?;
                }
            }
        }
        std::fs::create_dir_all(&self.dir).map_err(Error::io(format!("creating {}", self.dir.display())))?;
        let sampling = plan.request(mc_seed);
        let chunk = 64;
        let bar = Progress::texts(texts.len(), format!("teacher `{name}`: {plan}"));
        let (mut samples, mut hidden): (Vec<Vec<f32>>, Vec<f32>) = (Vec::new(), Vec::new());
        for (i, part) in texts.chunks(chunk).enumerate() {
            // Each chunk's passes get their own seed, derived from the run's MC seed.
            let sampling = match sampling {
                Sampling::Stochastic { passes, seed, top_layers, lower_passes } => Sampling::Stochastic {
                    passes,
                    seed: seed.wrapping_mul(31).wrapping_add(i as u64),
                    top_layers,
                    lower_passes,
                },
                other => other,
            };
            let output = teacher.forward(part, &ForwardRequest { sampling, want_hidden }, info)?;
            let shape = output.logits.shape().to_vec();
            samples.resize(shape[0], Vec::new());
            for (s, rows) in samples.iter_mut().enumerate() {
                rows.extend_from_slice(output.logits.at(&[s]));
            }
            if let Some(h) = output.hidden.into_option() {
                hidden.extend_from_slice(h.data());
            }
            bar.inc(part.len() as u64);
        }
        bar.finish();
        let (passes, labels) = (samples.len(), info.labels.len());
        let logits = Tensor::new(vec![passes, texts.len(), labels], samples.concat()).expect("rows of equal width");
        let hidden = want_hidden
            .then(|| Tensor::new(vec![texts.len(), hidden.len() / texts.len().max(1)], hidden).expect("rows"));
        let signals = TeacherSignalSet { logits, hidden };
        save(&path, &signals)?;
        crate::files::kill_point("signal-written");
        Ok((signals, Provenance::Computed))
    }
}
