//! `transformers`: a teacher run live by Hugging Face transformers in a Python worker process
//! (the user's interpreter), on the device the config names (cpu, cuda, mps): any architecture
//! transformers loads with `AutoModelForSequenceClassification` takes part in every strategy and
//! estimator, Monte-Carlo dropout included. The worker (`worker.py`, embedded) speaks frames
//! (`workbench_framed`) with JSON headers and raw f32 bodies; every failure (no interpreter, no
//! transformers, a model that does not load, a worker that dies, writes garbage or stalls) is an
//! error that names the model and what to do.

use std::{process::Command, time::Duration};

use serde::{Deserialize, Serialize};
use workbench_framed::FramedChild;
use workbench_plugin_api::{
    export_plugin, params, ComponentKind, ComponentSpec, ForwardRequest, ParamKind, ParamTable, Params, Plugin,
    PluginError, PluginManifest, PluginResult, RString, Sampling, Signals, Teacher, TeacherInfo, TeacherOutput, Tensor,
};

/// The worker the plugin starts, unless a config names its own.
const WORKER: &str = include_str!("worker.py");

pub struct PythonTeacherPlugin;

params! {
    /// What a config sets of a `transformers` teacher.
    pub struct TransformersParams {
        /// A checkpoint directory (relative to the working directory) or a Hugging Face hub name
        /// (downloaded by transformers unless HF_HUB_OFFLINE=1).
        model: String = required(ParamKind::Text),
        /// The Python interpreter, with torch and transformers (scripts/requirements-bridge.txt).
        python: String = text("python3"),
        /// Where the model runs: cpu, cuda, cuda:1, mps.
        device: String = text("cpu"),
        /// Tokens per text, special tokens included.
        max_length: usize = int(128).range(2.0, 1_000_000.0),
        /// Texts per forward pass in the worker.
        batch_size: usize = int(32).range(1.0, 4096.0),
        /// The pooled hidden state it gives: mean over the attention mask, the first token, or none.
        hidden: String = choice(&["mean", "cls", "none"]),
        /// Run the checkpoint's own code (needed for mean-pooled checkpoints the workbench exported).
        trust_remote_code: bool = bool(false),
        /// Seconds loading the model or one call may take before the worker is stopped.
        timeout: usize = int(600).range(1.0, 86_400.0),
        /// A worker script of your own that speaks the same protocol (docs/signals.md); empty: the
        /// built-in one.
        worker: String = text(""),
    }
}

impl Plugin for PythonTeacherPlugin {
    fn manifest() -> PluginManifest {
        workbench_plugin_api::manifest![ComponentSpec::new(
            "transformers",
            ComponentKind::Teacher,
            "A Hugging Face sequence classifier of any architecture, run live by transformers in a Python worker \
             on the device the config names.",
            TransformersParams::specs(),
            Signals { stochastic_passes: true, member_passes: false, hidden_states: true, scores: false },
        )]
    }

    fn create_teacher(component: &str, params: &ParamTable) -> PluginResult<Box<dyn Teacher>> {
        if component != "transformers" {
            return Err(PluginError::unsupported(format!("no teacher named `{component}`")));
        }
        Ok(Box::new(PythonTeacher::start(TransformersParams::parse(params)?)?))
    }
}

export_plugin!(PythonTeacherPlugin);

#[derive(Serialize)]
struct Load<'a> {
    model: &'a str,
    device: &'a str,
    max_length: usize,
    batch_size: usize,
    hidden: &'a str,
    trust_remote_code: bool,
}

#[derive(Serialize)]
struct Forward<'a> {
    texts: Vec<&'a str>,
    passes: u32,
    seed: u64,
    hidden: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum ToWorker<'a> {
    Load(Load<'a>),
    Forward(Forward<'a>),
}

#[derive(Deserialize)]
struct Ready {
    labels: Vec<String>,
    hidden_size: usize,
    model_type: String,
    device: String,
    torch: String,
    transformers: String,
}

#[derive(Deserialize)]
struct Output {
    passes: usize,
    hidden_size: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum FromWorker {
    Ready(Ready),
    Output(Output),
    Error(String),
}

/// A model served by a Python worker.
pub struct PythonTeacher {
    model: String,
    worker: FramedChild,
    timeout: Duration,
    labels: Vec<String>,
    hidden_size: usize,
}

impl PythonTeacher {
    /// Starts the worker, has it load the model and waits until it is ready.
    pub fn start(params: TransformersParams) -> PluginResult<Self> {
        let TransformersParams {
            model,
            python,
            device,
            max_length,
            batch_size,
            hidden,
            trust_remote_code,
            timeout,
            worker,
        } = params;
        let mut command = Command::new(&python);
        command.arg("-u");
        if worker.is_empty() {
            command.args(["-c", WORKER]);
        } else {
            command.arg(&worker);
        }
        let child = FramedChild::spawn(&mut command, "Python worker").map_err(|e| {
            PluginError::io(format!(
                "cannot start the Python interpreter `{python}` ({e}): set the teacher's `python` to one with torch and \
                 transformers (scripts/requirements-bridge.txt)"
            ))
        })?;
        let mut teacher = Self {
            model: model.clone(),
            worker: child,
            timeout: Duration::from_secs(timeout as u64),
            labels: Vec::new(),
            hidden_size: 0,
        };
        let load = ToWorker::Load(Load {
            model: &model,
            device: &device,
            max_length,
            batch_size,
            hidden: &hidden,
            trust_remote_code,
        });
        match teacher.call("loading the model", &load)? {
            FromWorker::Ready(ready) => {
                tracing::info!(
                    model = %model,
                    model_type = %ready.model_type,
                    device = %ready.device,
                    torch = %ready.torch,
                    transformers = %ready.transformers,
                    labels = ready.labels.len(),
                    "Python worker ready"
                );
                teacher.labels = ready.labels;
                teacher.hidden_size = ready.hidden_size;
                Ok(teacher)
            }
            _ => Err(teacher.fail("loading the model", "an answer other than `ready`".into())),
        }
    }

    /// Sends a message and reads its JSON answer; the worker's own error becomes the plugin's.
    fn call(&mut self, call: &str, message: &ToWorker) -> PluginResult<FromWorker> {
        let body = serde_json::to_vec(message).map_err(|e| PluginError::other(format!("cannot encode {call}: {e}")))?;
        let answer = self.worker.call(call, &body, self.timeout).map_err(|reason| self.fail(call, reason))?;
        match serde_json::from_slice(&answer) {
            Ok(FromWorker::Error(reason)) => Err(self.fail(call, reason)),
            Ok(answer) => Ok(answer),
            Err(e) => Err(self.fail(call, format!("an unreadable answer ({e})"))),
        }
    }

    /// The next frame, of raw little-endian f32 values.
    fn floats(&mut self, call: &str, count: usize) -> PluginResult<Vec<f32>> {
        let body = self.worker.receive(call, self.timeout).map_err(|reason| self.fail(call, reason))?;
        if body.len() != count * 4 {
            return Err(self.fail(call, format!("{} bytes where {count} f32 values were due", body.len())));
        }
        Ok(body.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("chunks of 4"))).collect())
    }

    fn fail(&self, call: &str, reason: String) -> PluginError {
        PluginError::other(format!("the Python worker of `{}` failed in {call}: {reason}", self.model))
    }
}

impl Teacher for PythonTeacher {
    fn info(&self) -> PluginResult<TeacherInfo> {
        Ok(TeacherInfo {
            labels: self.labels.iter().map(|l| l.as_str().into()).collect(),
            hidden_size: self.hidden_size,
            members: 1,
        })
    }

    fn forward(&mut self, texts: &[RString], request: &ForwardRequest) -> PluginResult<TeacherOutput> {
        let (passes, seed) = match request.sampling {
            Sampling::Deterministic => (0, 0),
            Sampling::Stochastic { top_layers, lower_passes, .. } if top_layers != 0 || lower_passes != 0 => {
                return Err(PluginError::unsupported(format!(
                    "`{}` runs in transformers, where dropout is on in every layer or none: an estimator's `top_layers` \
                     and `lower_passes` need our encoder",
                    self.model
                )))
            }
            Sampling::Stochastic { passes, seed, .. } => (passes, seed),
            Sampling::Members => {
                return Err(PluginError::unsupported(format!("`{}` is one model: it has no ensemble members", self.model)))
            }
        };
        let message = ToWorker::Forward(Forward {
            texts: texts.iter().map(RString::as_str).collect(),
            passes,
            seed,
            hidden: request.want_hidden,
        });
        let Output { passes, hidden_size } = match self.call("forward", &message)? {
            FromWorker::Output(output) => output,
            _ => return Err(self.fail("forward", "an answer other than `output`".into())),
        };
        let labels = self.labels.len();
        let logits = self.floats("forward", passes * texts.len() * labels)?;
        let hidden = match hidden_size {
            0 => None,
            size => Some(Tensor::new(vec![texts.len(), size], self.floats("forward", texts.len() * size)?)?),
        };
        Ok(TeacherOutput::new(Tensor::new(vec![passes, texts.len(), labels], logits)?, hidden))
    }
}

#[cfg(test)]
mod tests;
