//! `signals-file`: a teacher whose outputs were computed elsewhere, by any tool on any device,
//! and written to a signals file (docs/signals.md): so that models our encoder cannot run
//! (DeBERTa, ModernBERT, ELECTRA, decoder classifiers, anything in PyTorch) take part in every
//! strategy and estimator. `scripts/write_signals.py` writes the file from any Hugging Face
//! sequence classifier, Monte-Carlo dropout passes included.
//!
//! The file is a safetensors file: `text_sha256` (u8 `[N, 32]`, the sha256 of each text's UTF-8
//! bytes), `logits` (f32 `[N, L]`, dropout off), optionally `hidden` (f32 `[N, H]`, a pooled
//! hidden state), `samples` (f32 `[S, N, L]`, S stochastic passes) and `members` (f32
//! `[M, N, L]`, an ensemble's members); its metadata holds `format` =
//! `workbench-signals/1` and `labels`, a JSON list of the label names in logit order.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use workbench_plugin_api::{
    export_plugin, params, ComponentKind, ComponentSpec, ForwardRequest, ParamKind, ParamTable, Params, Plugin,
    PluginError, PluginManifest, PluginResult, RString, Sampling, Signals, Teacher, TeacherInfo, TeacherOutput, Tensor,
};

/// The `format` a signals file declares in its metadata.
pub const FORMAT: &str = "workbench-signals/1";

pub struct SignalsTeacherPlugin;

params! {
    /// What a config sets of a `signals-file` teacher.
    pub struct SignalsFileParams {
        /// The signals file (safetensors, docs/signals.md), relative to the working directory.
        file: String = required(ParamKind::Text),
    }
}

impl Plugin for SignalsTeacherPlugin {
    fn manifest() -> PluginManifest {
        workbench_plugin_api::manifest![ComponentSpec::new(
            "signals-file",
            ComponentKind::Teacher,
            "A teacher whose outputs (logits, and optionally hidden states, stochastic passes, members) were \
             computed elsewhere and written to a signals file (scripts/write_signals.py).",
            SignalsFileParams::specs(),
            Signals { stochastic_passes: true, member_passes: true, hidden_states: true, scores: false },
        )]
    }

    fn create_teacher(component: &str, params: &ParamTable) -> PluginResult<Box<dyn Teacher>> {
        if component != "signals-file" {
            return Err(PluginError::unsupported(format!("no teacher named `{component}`")));
        }
        let SignalsFileParams { file } = SignalsFileParams::parse(params)?;
        Ok(Box::new(SignalsFile::open(Path::new(&file))?))
    }
}

export_plugin!(SignalsTeacherPlugin);

/// Rows of a tensor read from the file: `[count, N, width]` (count 1 for a matrix).
struct Block {
    count: usize,
    width: usize,
    values: Vec<f32>,
}

impl Block {
    /// Row `row` of pass `pass`.
    fn row(&self, pass: usize, row: usize, texts: usize) -> &[f32] {
        let start = (pass * texts + row) * self.width;
        &self.values[start..start + self.width]
    }
}

/// An opened signals file.
pub struct SignalsFile {
    path: PathBuf,
    labels: Vec<String>,
    /// The row of each text, by the sha256 of its bytes.
    rows: HashMap<[u8; 32], usize>,
    logits: Block,
    hidden: Option<Block>,
    samples: Option<Block>,
    members: Option<Block>,
    /// Rows a call has asked for, to name the extra texts when the teacher is dropped.
    asked: Vec<bool>,
}

/// The sha256 of a text's UTF-8 bytes, the key of its row.
pub fn text_key(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

const TENSORS: [&str; 5] = ["text_sha256", "logits", "hidden", "samples", "members"];

impl SignalsFile {
    /// Reads and checks the whole file: its format, labels, keys and every tensor's shape.
    pub fn open(path: &Path) -> PluginResult<Self> {
        let bad = |reason: String| PluginError::invalid_input(format!("signals file {}: {reason}", path.display()));
        let bytes = std::fs::read(path).map_err(|e| {
            PluginError::io(format!(
                "signals file {}: {e} (relative paths are read from the working directory)",
                path.display()
            ))
        })?;
        let (_, metadata) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e}); write it with scripts/write_signals.py")))?;
        let metadata = metadata.metadata().clone().unwrap_or_default();
        match metadata.get("format").map(String::as_str) {
            Some(FORMAT) => {}
            Some(other) => return Err(bad(format!("format `{other}` is not `{FORMAT}`"))),
            None => return Err(bad(format!("its metadata has no `format` (`{FORMAT}` expected)"))),
        }
        let labels: Vec<String> = metadata
            .get("labels")
            .ok_or_else(|| bad("its metadata has no `labels` (a JSON list of label names in logit order)".into()))
            .and_then(|text| {
                serde_json::from_str(text).map_err(|e| bad(format!("`labels` is not a JSON list of names: {e}")))
            })?;
        if labels.is_empty() || labels.iter().any(String::is_empty) {
            return Err(bad("`labels` must name at least one label, each non-empty".into()));
        }
        if let Some(twice) = labels.iter().enumerate().find(|(i, l)| labels[..*i].contains(l)).map(|(_, l)| l) {
            return Err(bad(format!("`labels` names `{twice}` twice")));
        }
        let file = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("unreadable tensors: {e}")))?;
        if let Some(unknown) = file.names().into_iter().find(|name| !TENSORS.contains(name)) {
            return Err(bad(format!("unknown tensor `{unknown}` (known: {})", TENSORS.join(", "))));
        }
        let keys = file.tensor("text_sha256").map_err(|_| bad("no tensor `text_sha256` (u8 [N, 32])".into()))?;
        if keys.dtype() != Dtype::U8 || keys.shape().len() != 2 || keys.shape()[1] != 32 {
            return Err(bad(format!(
                "`text_sha256` is {:?} {:?}; it must be u8 [N, 32], the sha256 of each text's UTF-8 bytes",
                keys.dtype(),
                keys.shape()
            )));
        }
        let texts = keys.shape()[0];
        let mut rows = HashMap::with_capacity(texts);
        let mut repeated = 0;
        for (row, key) in keys.data().chunks_exact(32).enumerate() {
            if rows.insert(key.try_into().expect("chunks of 32"), row).is_some() {
                repeated += 1;
            }
        }
        if repeated > 0 {
            return Err(bad(format!("{repeated} of its {texts} texts appear more than once in `text_sha256`")));
        }
        let block = |name: &str, rank: usize, width: Option<usize>| -> PluginResult<Option<Block>> {
            let Ok(view) = file.tensor(name) else { return Ok(None) };
            let shape = view.shape();
            let (count, n, w) = match (rank, shape) {
                (2, &[n, w]) => (1, n, w),
                (3, &[count, n, w]) => (count, n, w),
                _ => return Err(bad(format!("`{name}` has shape {shape:?}; expected {rank} dimensions"))),
            };
            if view.dtype() != Dtype::F32 {
                return Err(bad(format!("`{name}` is {:?}; expected f32", view.dtype())));
            }
            if n != texts || width.is_some_and(|width| width != w) || count == 0 || w == 0 {
                let expected = match (rank, width) {
                    (2, Some(w)) => format!("[{texts}, {w}]"),
                    (2, None) => format!("[{texts}, H]"),
                    (_, w) => format!("[S, {texts}, {}]", w.unwrap_or_default()),
                };
                return Err(bad(format!(
                    "`{name}` has shape {shape:?}; expected {expected} ({texts} texts, {} labels)",
                    labels.len()
                )));
            }
            let values: Vec<f32> =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("chunks of 4"))).collect();
            let bad_values = values.iter().filter(|v| !v.is_finite()).count();
            if bad_values > 0 {
                return Err(bad(format!("`{name}` holds {bad_values} values that are not finite numbers")));
            }
            Ok(Some(Block { count, width: w, values }))
        };
        let logits = block("logits", 2, Some(labels.len()))?
            .ok_or_else(|| bad(format!("no tensor `logits` (f32 [N, {}])", labels.len())))?;
        let hidden = block("hidden", 2, None)?;
        let samples = block("samples", 3, Some(labels.len()))?;
        let members = block("members", 3, Some(labels.len()))?;
        tracing::info!(
            file = %path.display(),
            texts,
            labels = labels.len(),
            hidden = hidden.as_ref().map_or(0, |h| h.width),
            stochastic_passes = samples.as_ref().map_or(0, |s| s.count),
            model = metadata.get("model").map_or("unnamed", String::as_str),
            "signals file read"
        );
        Ok(Self { path: path.into(), labels, rows, logits, hidden, samples, members, asked: vec![false; texts] })
    }

    /// The row of every text, or an error naming how many are missing and the first of them.
    fn rows_of(&mut self, texts: &[RString]) -> PluginResult<Vec<usize>> {
        let found: Vec<Option<usize>> = texts.iter().map(|t| self.rows.get(&text_key(t)).copied()).collect();
        let missing = found.iter().filter(|r| r.is_none()).count();
        if missing > 0 {
            let first = texts[found.iter().position(Option::is_none).expect("one is missing")].as_str();
            let shown: String = first.chars().take(80).collect();
            return Err(PluginError::invalid_input(format!(
                "{missing} of the {} texts asked for are not in the signals file {} (the first: {shown:?}); write the \
                 file for the texts the run reads (`workbench texts CONFIG`, then scripts/write_signals.py)",
                texts.len(),
                self.path.display()
            )));
        }
        let rows: Vec<usize> = found.into_iter().flatten().collect();
        for &row in &rows {
            self.asked[row] = true;
        }
        Ok(rows)
    }

    fn gather(block: &Block, passes: usize, rows: &[usize], texts: usize) -> PluginResult<Tensor> {
        let values: Vec<f32> = (0..passes)
            .flat_map(|pass| rows.iter().flat_map(move |&row| block.row(pass, row, texts)))
            .copied()
            .collect();
        Tensor::new(vec![passes, rows.len(), block.width], values)
    }

    fn missing(&self, what: &str, tensor: &str, remedy: &str) -> PluginError {
        PluginError::unsupported(format!(
            "the signals file {} holds no {what} (tensor `{tensor}`): {remedy}",
            self.path.display()
        ))
    }
}

impl Teacher for SignalsFile {
    fn info(&self) -> PluginResult<TeacherInfo> {
        Ok(TeacherInfo {
            labels: self.labels.iter().map(|l| l.as_str().into()).collect(),
            hidden_size: self.hidden.as_ref().map_or(0, |h| h.width),
            members: self.members.as_ref().map_or(1, |m| m.count),
        })
    }

    fn forward(&mut self, texts: &[RString], request: &ForwardRequest) -> PluginResult<TeacherOutput> {
        let rows = self.rows_of(texts)?;
        let n = self.asked.len();
        let logits = match request.sampling {
            Sampling::Deterministic => Self::gather(&self.logits, 1, &rows, n)?,
            Sampling::Stochastic { top_layers, lower_passes, .. } if top_layers != 0 || lower_passes != 0 => {
                return Err(PluginError::unsupported(format!(
                    "the signals file {} holds passes with dropout in every layer; an estimator's `top_layers` and \
                     `lower_passes` need a teacher that runs its model",
                    self.path.display()
                )))
            }
            Sampling::Stochastic { passes, .. } => {
                let samples = self.samples.as_ref().ok_or_else(|| {
                    self.missing("stochastic passes", "samples", "write them with scripts/write_signals.py --passes K")
                })?;
                if samples.count < passes as usize {
                    return Err(PluginError::invalid_input(format!(
                        "the estimator asks for {passes} stochastic passes, but the signals file {} holds {}; write it \
                         again with --passes {passes}, or ask for fewer",
                        self.path.display(),
                        samples.count
                    )));
                }
                Self::gather(samples, passes as usize, &rows, n)?
            }
            Sampling::Members => {
                let members = self.members.as_ref().ok_or_else(|| {
                    self.missing("ensemble members", "members", "write each member's logits into `members`")
                })?;
                Self::gather(members, members.count, &rows, n)?
            }
        };
        let hidden = match (&self.hidden, request.want_hidden) {
            (Some(hidden), true) => {
                let values: Vec<f32> = rows.iter().flat_map(|&row| hidden.row(0, row, n)).copied().collect();
                Some(Tensor::new(vec![rows.len(), hidden.width], values)?)
            }
            _ => None,
        };
        Ok(TeacherOutput::new(logits, hidden))
    }
}

impl Drop for SignalsFile {
    /// Texts the file holds that no call asked for are named by count: a file written for other
    /// texts (another `data` table) shows here, beside the missing ones `forward` refuses.
    fn drop(&mut self) {
        let asked = self.asked.iter().filter(|a| **a).count();
        if asked > 0 && asked < self.asked.len() {
            tracing::info!(
                file = %self.path.display(),
                "{} of the signals file's {} texts were never asked for",
                self.asked.len() - asked,
                self.asked.len()
            );
        }
    }
}

/// What a signals file holds, row i of every tensor for `texts[i]`: the writer for Rust code
/// and tests (`scripts/write_signals.py` is the one for PyTorch models).
pub struct SignalsData {
    pub texts: Vec<String>,
    pub labels: Vec<String>,
    /// `[N][L]`, dropout off.
    pub logits: Vec<Vec<f32>>,
    /// `[N][H]`.
    pub hidden: Option<Vec<Vec<f32>>>,
    /// `[S][N][L]`, stochastic passes.
    pub samples: Option<Vec<Vec<Vec<f32>>>>,
}

impl SignalsData {
    /// Writes the file (rows of unequal length are the caller's error, and panic).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        fn floats<'a>(rows: impl Iterator<Item = &'a f32>) -> Vec<u8> {
            rows.flat_map(|v| v.to_le_bytes()).collect()
        }
        let n = self.texts.len();
        let mut tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = vec![
            ("text_sha256", Dtype::U8, vec![n, 32], self.texts.iter().flat_map(|t| text_key(t)).collect()),
            ("logits", Dtype::F32, vec![n, self.labels.len()], floats(self.logits.iter().flatten())),
        ];
        if let Some(hidden) = &self.hidden {
            let width = hidden.first().map_or(0, Vec::len);
            tensors.push(("hidden", Dtype::F32, vec![n, width], floats(hidden.iter().flatten())));
        }
        if let Some(samples) = &self.samples {
            let shape = vec![samples.len(), n, self.labels.len()];
            tensors.push(("samples", Dtype::F32, shape, floats(samples.iter().flatten().flatten())));
        }
        let views = tensors.iter().map(|(name, dtype, shape, data)| {
            (*name, safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).expect("rows of equal length"))
        });
        let metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("labels".to_string(), serde_json::to_string(&self.labels).expect("names serialize")),
        ]);
        let bytes = safetensors::serialize(views, Some(metadata)).map_err(std::io::Error::other)?;
        std::fs::write(path, bytes)
    }
}

#[cfg(test)]
mod tests;
