use std::path::PathBuf;

use workbench_plugin_api::{ApiVersion, ComponentKind, PluginError, PluginErrorKind};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot load plugin library {path}: {reason}")]
    LoadFailed { path: PathBuf, reason: String },

    /// A plugin library's worker could not load it; the worker's message names the library.
    #[error("{0}")]
    WorkerLoad(String),

    #[error(
        "{path} is not a workbench plugin: it exports no `workbench_plugin_handshake` symbol \
         (plugins are built with `workbench_plugin_api::export_plugin!`)"
    )]
    NotAPlugin { path: PathBuf },

    #[error(
        "plugin `{plugin}` {plugin_version} ({path}) was built against plugin API {plugin_api}, \
         but this workbench speaks plugin API {host_api}: rebuild the plugin against \
         workbench-plugin-api {}.x, or remove it from the plugin directories",
        host_api.major
    )]
    IncompatibleApi {
        plugin: String,
        plugin_version: String,
        path: PathBuf,
        plugin_api: ApiVersion,
        host_api: ApiVersion,
    },

    #[error(
        "plugin `{plugin}` ({path}) declares plugin API {plugin_api} but its types do not match this \
         workbench's; rebuild it against the same workbench-plugin-api release: {reason}"
    )]
    IncompatibleLayout { plugin: String, path: PathBuf, plugin_api: ApiVersion, reason: String },

    #[error("plugin `{plugin}` ({path}) {} in {call}: {}", verb(source.kind), source.message)]
    PluginCall { plugin: String, path: PathBuf, call: String, source: PluginError },

    #[error("plugin `{plugin}` returned an invalid result from {call}: {reason}")]
    InvalidPluginOutput { plugin: String, call: String, reason: String },

    #[error(
        "{} plugins provide a {kind} named `{name}`: {}; name the one to use with `library = \"FILE or DIRECTORY\"` in its table",
        libraries.len(),
        libraries.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and ")
    )]
    AmbiguousComponent { kind: ComponentKind, name: String, libraries: Vec<PathBuf> },

    #[error("no {kind} named `{name}` among the loaded plugins{hint}")]
    UnknownComponent { kind: ComponentKind, name: String, hint: String },

    #[error("configuration: {0}")]
    Resolve(Box<figment::Error>),

    #[error("configuration is invalid:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    InvalidConfig { problems: Vec<String> },

    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },

    /// Another workbench process holds what this one needs (a run directory).
    #[error("busy: {0}")]
    Busy(String),

    /// A problem in a data file, at a line counted from 1 (0: the file as a whole).
    #[error("{}{}: {reason}", path.display(), if *line == 0 { String::new() } else { format!(", line {line}") })]
    Data { path: PathBuf, line: usize, reason: String },

    #[error("asset `{asset}`: {reason}. To supply it by hand: {remedy}")]
    Asset { asset: String, reason: String, remedy: String },

    #[error("no asset named `{name}`; known: {known}")]
    UnknownAsset { name: String, known: String },

    #[error(transparent)]
    Model(#[from] workbench_models::ModelError),

    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),

    /// Submitting to or asking Slurm failed.
    #[error("Slurm: {0}")]
    Slurm(String),

    /// A file the workbench wrote earlier that it cannot use (another version's, or damaged).
    #[error("{}: {reason}", path.display())]
    Artefact { path: PathBuf, reason: String },

    /// A saved training state that does not fit the run resuming from it.
    #[error("the saved training state does not fit this run: {0}; remove the run's `state` directory to train from the start")]
    SavedState(String),

    /// A strategy's recipe the host cannot turn into a loss.
    #[error("the strategy's recipe: {0}")]
    Recipe(String),

    #[error("drawing {}: {reason}", path.display())]
    Chart { path: PathBuf, reason: String },
}

fn verb(kind: PluginErrorKind) -> &'static str {
    match kind {
        PluginErrorKind::Panic => "panicked",
        _ => "failed",
    }
}

impl From<figment::Error> for Error {
    fn from(error: figment::Error) -> Self {
        Error::Resolve(Box::new(error))
    }
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
