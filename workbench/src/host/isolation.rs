//! Process isolation: a plugin library loaded into a worker child process (the `workbench`
//! executable itself, `plugin-worker LIBRARY`) that answers the host's calls over its stdin and
//! stdout. An abort or a crash inside the plugin ends the worker, not the host: the call fails
//! naming the plugin and the call; a call that takes longer than the timeout stops the worker.
//! Frames (`workbench_framed`: a capped little-endian u64 length) carry a JSON body; only plain
//! API data travels. A worker that writes garbage into its channel is stopped and named.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::Duration,
};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use workbench_plugin_api::{
    ForwardRequest, ParamTable, PluginError, PluginManifest, Recipe, SamplingPlan, StrategyInput, TeacherInfo,
    TeacherOutput, TeacherSamples, Tensor,
};

use workbench_framed::FramedChild;

use crate::host::HostSettings;

/// A call into the plugin, by the id of the object the worker created.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    CreateTeacher { name: String, params: ParamTable },
    CreateEstimator { name: String, params: ParamTable },
    CreateStrategy { name: String, params: ParamTable },
    TeacherInfo { id: u32 },
    TeacherForward { id: u32, texts: Vec<String>, request: ForwardRequest },
    EstimatorPlan { id: u32 },
    EstimatorScore { id: u32, samples: Vec<TeacherSamples> },
    StrategyRecipe { id: u32, input: StrategyInput },
}

/// The worker's answer: what the plugin returned, or its error.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// The first frame of a worker: the library loaded, with its manifest; or why it did not.
    Loaded(PluginManifest),
    LoadFailed(String),
    Created(u32),
    Info(TeacherInfo),
    Output(TeacherOutput),
    Plan(SamplingPlan),
    Scores(Tensor),
    Recipe(Recipe),
    Failed(PluginError),
}

pub fn write_frame(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    workbench_framed::write_frame(out, &body)
}

/// The next frame, `None` at the end of the stream.
pub fn read_frame<T: DeserializeOwned>(input: &mut impl Read) -> std::io::Result<Option<T>> {
    match workbench_framed::read_frame(input)? {
        Some(body) => serde_json::from_slice(&body).map(Some).map_err(std::io::Error::other),
        None => Ok(None),
    }
}

/// A worker process serving one plugin library.
pub struct Worker {
    pub path: PathBuf,
    timeout: Duration,
    process: Mutex<FramedChild>,
}

impl Worker {
    /// Starts a worker for the library at `path` and waits for its manifest; `Err` carries the
    /// worker's own error when it refused the library, or why the worker failed.
    pub fn spawn(path: &Path, settings: &HostSettings, timeout: Duration) -> crate::Result<(Worker, PluginManifest)> {
        let failed = |reason: String| crate::Error::LoadFailed { path: path.into(), reason };
        let exe = std::env::current_exe().map_err(|e| failed(format!("cannot find the workbench executable: {e}")))?;
        let mut command = Command::new(exe);
        command
            .arg("plugin-worker")
            .arg(path)
            .args(["--threads", &settings.threads.to_string()])
            .args(["--log-level", &format!("{:?}", settings.max_log_level)])
            .arg("--cache-dir")
            .arg(&settings.cache_dir)
            .args(settings.config_dir.iter().flat_map(|dir| [std::ffi::OsStr::new("--config-dir"), dir.as_os_str()]));
        let child = FramedChild::spawn(&mut command, "worker process")
            .map_err(|e| failed(format!("cannot start a worker process: {e}")))?;
        let worker = Worker { path: path.into(), timeout, process: Mutex::new(child) };
        match worker.receive("loading the library").map_err(failed)? {
            Response::Loaded(manifest) => Ok((worker, manifest)),
            Response::LoadFailed(reason) => Err(crate::Error::WorkerLoad(reason)),
            other => Err(failed(format!("the worker answered {other:?} instead of a manifest"))),
        }
    }

    fn receive(&self, call: &str) -> Result<Response, String> {
        let mut process = self.process.lock().map_err(|_| "the worker's lock is poisoned".to_string())?;
        let body = process.receive(call, self.timeout)?;
        serde_json::from_slice(&body).map_err(|e| format!("the worker sent an unreadable answer: {e}"))
    }

    /// Sends `request` and waits for the answer; `Err` says why the worker gave none.
    pub fn call(&self, call: &str, request: &Request) -> Result<Response, String> {
        let body = serde_json::to_vec(request).map_err(|e| format!("cannot encode {call}: {e}"))?;
        let mut process = self.process.lock().map_err(|_| "the worker's lock is poisoned".to_string())?;
        let answer = process.call(call, &body, self.timeout)?;
        serde_json::from_slice(&answer).map_err(|e| format!("the worker sent an unreadable answer: {e}"))
    }
}
