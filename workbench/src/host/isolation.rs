//! Process isolation: a plugin library loaded into a worker child process (the `workbench`
//! executable itself, `plugin-worker LIBRARY`) that answers the host's calls over its stdin and
//! stdout. An abort or a crash inside the plugin ends the worker, not the host: the call fails
//! naming the plugin and the call; a call that takes longer than the timeout stops the worker.
//! Frames are a little-endian u64 length and a JSON body; only plain API data travels.

use std::{
    io::{BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{
        mpsc::{self, Receiver, RecvTimeoutError},
        Mutex,
    },
    time::Duration,
};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use workbench_plugin_api::{
    ForwardRequest, ParamTable, PluginError, PluginManifest, Recipe, SamplingPlan, StrategyInput, TeacherInfo,
    TeacherOutput, TeacherSamples, Tensor,
};

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
    out.write_all(&(body.len() as u64).to_le_bytes())?;
    out.write_all(&body)?;
    out.flush()
}

/// The body of the next frame, `None` at the end of the stream.
fn read_body(input: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 8];
    match input.read_exact(&mut length) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0u8; u64::from_le_bytes(length) as usize];
    input.read_exact(&mut body)?;
    Ok(Some(body))
}

/// The next frame, `None` at the end of the stream.
pub fn read_frame<T: DeserializeOwned>(input: &mut impl Read) -> std::io::Result<Option<T>> {
    match read_body(input)? {
        Some(body) => serde_json::from_slice(&body).map(Some).map_err(std::io::Error::other),
        None => Ok(None),
    }
}

struct Process {
    child: Child,
    stdin: ChildStdin,
    responses: Receiver<Vec<u8>>,
    /// Why the worker can take no more calls, once it cannot.
    gone: Option<String>,
}

/// A worker process serving one plugin library.
pub struct Worker {
    pub path: PathBuf,
    timeout: Duration,
    process: Mutex<Process>,
}

/// How a process ended, in words.
fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(6)) => "was killed by signal 6 (SIGABRT: the plugin aborted)".into(),
        (None, Some(9)) => "was killed by signal 9 (SIGKILL)".into(),
        (None, Some(11)) => "was killed by signal 11 (SIGSEGV: the plugin crashed)".into(),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".into(),
    }
}

impl Worker {
    /// Starts a worker for the library at `path` and waits for its manifest; `Err` carries the
    /// worker's own error when it refused the library, or why the worker failed.
    pub fn spawn(path: &Path, settings: &HostSettings, timeout: Duration) -> crate::Result<(Worker, PluginManifest)> {
        let failed = |reason: String| crate::Error::LoadFailed { path: path.into(), reason };
        let exe = std::env::current_exe().map_err(|e| failed(format!("cannot find the workbench executable: {e}")))?;
        let mut child = Command::new(exe)
            .arg("plugin-worker")
            .arg(path)
            .args(["--threads", &settings.threads.to_string()])
            .args(["--log-level", &format!("{:?}", settings.max_log_level)])
            .arg("--cache-dir")
            .arg(&settings.cache_dir)
            .args(settings.config_dir.iter().flat_map(|dir| [std::ffi::OsStr::new("--config-dir"), dir.as_os_str()]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| failed(format!("cannot start a worker process: {e}")))?;
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let (sender, responses) = mpsc::channel();
        // Frames are read on their own thread, so that a call can wait with a timeout.
        std::thread::spawn(move || {
            while let Ok(Some(body)) = read_body(&mut stdout) {
                if sender.send(body).is_err() {
                    break;
                }
            }
        });
        let worker =
            Worker { path: path.into(), timeout, process: Mutex::new(Process { child, stdin, responses, gone: None }) };
        match worker.receive("loading the library").map_err(failed)? {
            Response::Loaded(manifest) => Ok((worker, manifest)),
            Response::LoadFailed(reason) => Err(crate::Error::WorkerLoad(reason)),
            other => Err(failed(format!("the worker answered {other:?} instead of a manifest"))),
        }
    }

    fn receive(&self, call: &str) -> Result<Response, String> {
        let mut process = self.process.lock().map_err(|_| "the worker's lock is poisoned".to_string())?;
        Self::receive_locked(&mut process, call, self.timeout)
    }

    fn receive_locked(process: &mut Process, call: &str, timeout: Duration) -> Result<Response, String> {
        if let Some(gone) = &process.gone {
            return Err(gone.clone());
        }
        let failure = match process.responses.recv_timeout(timeout) {
            Ok(bytes) => {
                return serde_json::from_slice(&bytes).map_err(|e| format!("the worker sent an unreadable answer: {e}"))
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = process.child.kill();
                let _ = process.child.wait();
                format!("its worker process did not answer {call} within {} s and was stopped", timeout.as_secs())
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = process.child.wait().map(describe_exit).unwrap_or_else(|e| e.to_string());
                format!("its worker process {status} during {call}")
            }
        };
        process.gone = Some(failure.clone());
        Err(failure)
    }

    /// Sends `request` and waits for the answer; `Err` says why the worker gave none.
    pub fn call(&self, call: &str, request: &Request) -> Result<Response, String> {
        let mut process = self.process.lock().map_err(|_| "the worker's lock is poisoned".to_string())?;
        if let Some(gone) = &process.gone {
            return Err(gone.clone());
        }
        // A failed write means the worker is gone: the receive below reports its exit status.
        let _ = write_frame(&mut process.stdin, request);
        Self::receive_locked(&mut process, call, self.timeout)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(process) = self.process.get_mut() {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }
}
