//! `bert`: a teacher from one fine-tuned Hugging Face checkpoint, or several as ensemble
//! members. It tokenizes its own input with each checkpoint's tokenizer, so teachers with
//! different tokenizers and depths work together.

use candle_core::{Device, Tensor as CandleTensor};
use workbench_models::{Checkpoint, EncoderClassifier, McDepth, Precision, StochasticPass, TextTokenizer};
use workbench_plugin_api::{
    directory_or_asset, export_plugin, params, ComponentKind, ComponentSpec, ForwardRequest, ParamKind, ParamTable,
    Params, Plugin, PluginError, PluginManifest, PluginResult, RString, Sampling, Signals, Teacher, TeacherInfo,
    TeacherOutput, Tensor,
};

pub struct BertTeacherPlugin;

params! {
    /// What a config sets of a `bert` teacher.
    pub struct BertParams {
        /// Hugging Face checkpoint directories with a classification head (relative to the working
        /// directory), or pinned assets by name; several are ensemble members.
        checkpoints: Vec<String> = required(ParamKind::TextList),
        /// Tokens per text, [CLS] and [SEP] included.
        max_length: usize = int(128).range(2.0, 4096.0),
        /// Texts per forward pass.
        batch_size: usize = int(32).range(1.0, 4096.0),
        /// Of the linear layers' products: `bf16` rounds weights and activations to bf16 (sums
        /// stay fp32) where the CPU has AVX512-BF16, and runs fp32 elsewhere.
        precision: String = choice(&["fp32", "bf16"]),
        /// Monte-Carlo passes switch on only each stochastic layer's output dropout (after its
        /// feed-forward block) and the head's, not the embeddings' and attention's: with an
        /// estimator's `top_layers = 1`, 16 passes then cost about one deterministic pass.
        mc_outputs_only: bool = bool(false),
        /// Tokens per text in Monte-Carlo passes, at most `max_length` (0: `max_length`). On 20
        /// Newsgroups 32 tokens select the adequate teacher better than 128, and cost a quarter.
        mc_max_length: usize = int(0).range(0.0, 4096.0),
        /// Of the linear layers' products in Monte-Carlo passes (`same`: `precision`).
        mc_precision: String = choice(&["same", "fp32", "bf16"]),
    }
}

impl Plugin for BertTeacherPlugin {
    fn manifest() -> PluginManifest {
        workbench_plugin_api::manifest![ComponentSpec::new(
            "bert",
            ComponentKind::Teacher,
            "A fine-tuned BERT-family checkpoint directory (several make an ensemble).",
            BertParams::specs(),
            Signals { stochastic_passes: true, member_passes: true, hidden_states: true, scores: false },
        )]
    }

    fn create_teacher(component: &str, params: &ParamTable) -> PluginResult<Box<dyn Teacher>> {
        if component != "bert" {
            return Err(PluginError::unsupported(format!("no teacher named `{component}`")));
        }
        let BertParams { checkpoints, max_length, batch_size, precision, mc_outputs_only, mc_max_length, mc_precision } =
            BertParams::parse(params)?;
        let precision: Precision = precision.parse().map_err(PluginError::invalid_input)?;
        match mc_max_length {
            1 => {
                return Err(PluginError::invalid_input(
                    "`mc_max_length` = 1 leaves no room for the start and end tokens (0 reads `max_length` tokens)",
                ))
            }
            length if length > max_length => {
                return Err(PluginError::invalid_input(format!(
                    "`mc_max_length` ({length}) is above `max_length` ({max_length}): Monte-Carlo passes read a prefix of what the deterministic pass reads"
                )))
            }
            _ => {}
        }
        let mc = McView {
            max_length: (mc_max_length > 0).then_some(mc_max_length),
            precision: match mc_precision.as_str() {
                "same" => precision,
                other => other.parse().map_err(PluginError::invalid_input)?,
            },
            outputs_only: mc_outputs_only,
        };
        Ok(Box::new(BertTeacher::open(&checkpoints, max_length, batch_size, precision, mc)?))
    }
}

export_plugin!(BertTeacherPlugin);

/// How Monte-Carlo passes read a text: their own length and precision, and which dropouts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct McView {
    /// Tokens per text; `None`: the teacher's `max_length`.
    pub max_length: Option<usize>,
    pub precision: Precision,
    pub outputs_only: bool,
}

struct Member {
    model: EncoderClassifier,
    tokenizer: TextTokenizer,
    /// The model and tokenizer of Monte-Carlo passes where their precision or length differ
    /// (the first member's only: Monte-Carlo passes run the first member).
    mc_model: Option<EncoderClassifier>,
    mc_tokenizer: Option<TextTokenizer>,
}

impl Member {
    fn mc(&self) -> (&EncoderClassifier, &TextTokenizer) {
        (self.mc_model.as_ref().unwrap_or(&self.model), self.mc_tokenizer.as_ref().unwrap_or(&self.tokenizer))
    }
}

pub struct BertTeacher {
    members: Vec<Member>,
    labels: Vec<String>,
    batch_size: usize,
    mc_outputs_only: bool,
    device: Device,
}

/// A classifier of `checkpoint` at `precision`, warning where the CPU cannot run it.
fn classifier(checkpoint: &Checkpoint, dir: &std::path::Path, precision: Precision) -> PluginResult<EncoderClassifier> {
    let mut model = checkpoint.classifier(None, false, &Device::Cpu).map_err(model_error)?;
    let in_effect = model.set_precision(precision).map_err(model_error)?;
    if in_effect != precision {
        tracing::warn!(checkpoint = %dir.display(), "{precision} needs a CPU with AVX512-BF16: this teacher runs in {in_effect}");
    }
    Ok(model)
}

fn model_error(e: impl std::fmt::Display) -> PluginError {
    PluginError::other(e.to_string())
}

/// Mixes the run's MC seed with a chunk index, so that chunks differ and each is reproducible.
fn pass_seed(seed: u64, chunk: u64) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(chunk).rotate_left(17)
}

impl BertTeacher {
    pub fn open(
        checkpoints: &[String],
        max_length: usize,
        batch_size: usize,
        precision: Precision,
        mc: McView,
    ) -> PluginResult<Self> {
        let device = Device::Cpu;
        let mut members = Vec::new();
        for dir in checkpoints {
            let dir = directory_or_asset(dir, "checkpoint")?;
            let checkpoint = Checkpoint::open(&dir, max_length, &device).map_err(model_error)?;
            let model = classifier(&checkpoint, &dir, precision)?;
            let first = members.is_empty();
            let mc_model = (first && mc.precision != precision)
                .then(|| classifier(&checkpoint, &dir, mc.precision))
                .transpose()?;
            let mc_tokenizer = mc
                .max_length
                .filter(|&length| first && length < checkpoint.tokenizer.max_length())
                .map(|length| checkpoint.tokenizer.with_max_length(length).map_err(model_error))
                .transpose()?;
            members.push(Member { model, tokenizer: checkpoint.tokenizer, mc_model, mc_tokenizer });
        }
        let first = members.first().ok_or_else(|| PluginError::invalid_input("`checkpoints` is empty"))?;
        let labels = first.model.labels().to_vec();
        for (dir, member) in checkpoints.iter().zip(&members) {
            if member.model.labels() != labels.as_slice() {
                return Err(PluginError::invalid_input(format!(
                    "ensemble members must share their labels: {dir} has {:?}, {} has {labels:?}",
                    member.model.labels(),
                    checkpoints[0]
                )));
            }
        }
        Ok(Self { members, labels, batch_size, mc_outputs_only: mc.outputs_only, device })
    }

    /// Logits `[B, L]` and pooled states `[B, H]` of one member, in chunks of `batch_size`.
    fn run(
        &self,
        member: &Member,
        texts: &[RString],
        mut pass: Option<&mut StochasticPass>,
    ) -> PluginResult<(CandleTensor, CandleTensor)> {
        let mut logits = Vec::new();
        let mut pooled = Vec::new();
        for chunk in texts.chunks(self.batch_size) {
            let batch = member.tokenizer.batch(chunk, &self.device).map_err(model_error)?;
            let output = member.model.forward(&batch, pass.as_deref_mut()).map_err(model_error)?;
            logits.push(output.logits);
            pooled.push(output.pooled);
        }
        let cat = |parts: &[CandleTensor]| CandleTensor::cat(parts, 0).map_err(model_error);
        Ok((cat(&logits)?, cat(&pooled)?))
    }
}

fn plain(tensor: &CandleTensor) -> PluginResult<Tensor> {
    let shape = tensor.dims().to_vec();
    let data = tensor.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(model_error)?;
    Tensor::new(shape, data)
}

impl Teacher for BertTeacher {
    fn info(&self) -> PluginResult<TeacherInfo> {
        Ok(TeacherInfo {
            labels: self.labels.iter().map(|l| l.as_str().into()).collect(),
            hidden_size: self.members[0].model.hidden_size(),
            members: self.members.len(),
        })
    }

    fn forward(&mut self, texts: &[RString], request: &ForwardRequest) -> PluginResult<TeacherOutput> {
        let samples: Vec<CandleTensor> = match request.sampling {
            Sampling::Deterministic => {
                let outputs =
                    self.members.iter().map(|m| self.run(m, texts, None)).collect::<PluginResult<Vec<_>>>()?;
                let logits: Vec<CandleTensor> = outputs.iter().map(|(l, _)| l.clone()).collect();
                let mean = CandleTensor::stack(&logits, 0).and_then(|t| t.mean(0)).map_err(model_error)?;
                let hidden = if request.want_hidden {
                    let pooled: Vec<CandleTensor> = outputs.iter().map(|(_, p)| p.clone()).collect();
                    let mean = CandleTensor::stack(&pooled, 0).and_then(|t| t.mean(0)).map_err(model_error)?;
                    Some(plain(&mean)?)
                } else {
                    None
                };
                let logits = mean.unsqueeze(0).map_err(model_error)?;
                return Ok(TeacherOutput::new(plain(&logits)?, hidden));
            }
            Sampling::Stochastic { passes, seed, top_layers, lower_passes } => {
                let member = &self.members[0];
                let (model, tokenizer) = member.mc();
                let parts = texts
                    .chunks(self.batch_size)
                    .enumerate()
                    .map(|(chunk, part)| {
                        let batch = tokenizer.batch(part, &self.device).map_err(model_error)?;
                        let seed = pass_seed(seed, chunk as u64);
                        let depth = McDepth {
                            top_layers: top_layers as usize,
                            lower_passes: lower_passes as usize,
                            outputs_only: self.mc_outputs_only,
                        };
                        model.mc_logits(&batch, passes as usize, seed, depth).map_err(model_error)
                    })
                    .collect::<PluginResult<Vec<_>>>()?;
                let logits = CandleTensor::cat(&parts, 1).map_err(model_error)?;
                let hidden = if request.want_hidden { Some(plain(&self.run(member, texts, None)?.1)?) } else { None };
                return Ok(TeacherOutput::new(plain(&logits)?, hidden));
            }
            Sampling::Members => self
                .members
                .iter()
                .map(|m| self.run(m, texts, None).map(|(l, _)| l))
                .collect::<PluginResult<Vec<_>>>()?,
        };
        let stacked = CandleTensor::stack(&samples, 0).map_err(model_error)?;
        let hidden = if request.want_hidden { Some(plain(&self.run(&self.members[0], texts, None)?.1)?) } else { None };
        Ok(TeacherOutput::new(plain(&stacked)?, hidden))
    }
}
