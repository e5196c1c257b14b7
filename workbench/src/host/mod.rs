//! The plugin host: discovers plugin libraries, checks their API version and type layout, and
//! wraps every call into a plugin so that its failures (panics included) become errors that
//! name the plugin and the call.

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use abi_stable::{
    library::{lib_header_from_path, LibraryError, RawLibrary},
    std_types::{RResult, RSlice, RStr, RString},
};
use workbench_plugin_api::{
    ffi::{
        Configure, EstimatorBox, Handshake, PluginModuleRef, StrategyBox, TeacherBox, CONFIGURE_SYMBOL,
        HANDSHAKE_SYMBOL,
    },
    ComponentKind, ComponentSpec, ForwardRequest, HostContext, LogLevel, ParamTable, PluginContext, PluginError,
    PluginErrorKind, PluginManifest, Recipe, Sampling, SamplingPlan, StrategyInput, TeacherInfo, TeacherOutput,
    TeacherSamples, Tensor, API_VERSION,
};

pub mod isolation;
pub mod reference;

use crate::{Error, Result};
use isolation::{read_frame, write_frame, Request, Response, Worker};

/// What the host tells every plugin it loads.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// Threads each plugin may use; host and plugins never compute at the same time, so each
    /// pool gets the whole budget rather than a share of it.
    pub threads: usize,
    pub max_log_level: LogLevel,
    /// Which plugin libraries run in a worker process of their own.
    pub isolation: Isolation,
    /// The asset cache plugins resolve asset names in.
    pub cache_dir: PathBuf,
    /// The directory of the config file the plugins are loaded for.
    pub config_dir: Option<PathBuf>,
}

/// Which plugin libraries run in a worker process of their own, where an abort, a crash or a
/// hang in a plugin fails its call (naming plugin and call) instead of the host; a call that
/// takes longer than the timeout stops the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Every library inside the host (`--in-process-plugins`): the fastest, and a plugin's abort
    /// ends the host.
    InProcess,
    /// The libraries outside the workbench's own plugin directory (the command line's default):
    /// third-party code is contained, the built-in plugins run in the host.
    ThirdParty(std::time::Duration),
    /// Every library (`--isolate-plugins`, `isolate_plugins = true`).
    All(std::time::Duration),
}

impl Isolation {
    /// The call timeout when `library` runs in a worker under this setting.
    fn timeout_for(self, library: &Path) -> Option<std::time::Duration> {
        match self {
            Isolation::InProcess => None,
            Isolation::All(timeout) => Some(timeout),
            Isolation::ThirdParty(timeout) => {
                let own = Registry::default_dir().and_then(|dir| dir.canonicalize().ok());
                let dir = library.parent().and_then(|dir| dir.canonicalize().ok());
                (own.is_none() || own != dir).then_some(timeout)
            }
        }
    }
}

impl Default for HostSettings {
    fn default() -> Self {
        Self {
            threads: available_threads(),
            max_log_level: LogLevel::Info,
            isolation: Isolation::InProcess,
            cache_dir: crate::assets::cache_dir(None),
            config_dir: None,
        }
    }
}

impl HostSettings {
    fn plugin_context(&self) -> PluginContext {
        PluginContext {
            cache_dir: self.cache_dir.display().to_string().into(),
            config_dir: self.config_dir.as_ref().map(|dir| RString::from(dir.display().to_string())).into(),
            resolve_asset,
        }
    }
}

/// The host side of [`PluginContext::asset`]: the pinned asset's contents, fetched and checked.
extern "C" fn resolve_asset(name: RStr<'_>, cache: RStr<'_>) -> RResult<RString, PluginError> {
    match crate::assets::named(name.as_str()).and_then(|asset| asset.contents_dir(Path::new(cache.as_str()))) {
        Ok(dir) => RResult::ROk(dir.display().to_string().into()),
        Err(e @ Error::UnknownAsset { .. }) => RResult::RErr(PluginError::invalid_input(e.to_string())),
        Err(e) => RResult::RErr(PluginError::io(e.to_string())),
    }
}

/// The threads a `threads` setting means: 0 is every core.
pub fn thread_budget(configured: usize) -> usize {
    if configured == 0 {
        available_threads()
    } else {
        configured
    }
}

pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A loaded plugin library.
pub struct PluginLibrary {
    pub path: PathBuf,
    pub manifest: PluginManifest,
    access: Access,
    /// The file's sha256, read once: every teacher's cache key, the pins and the manifest ask.
    sha256: std::sync::OnceLock<String>,
}

/// Where a library's code runs.
enum Access {
    InProcess(PluginModuleRef),
    Worker(Arc<Worker>),
}

impl std::fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLibrary").field("path", &self.path).field("name", &self.manifest.name).finish()
    }
}

/// Whether the library file exports the workbench handshake, read from its symbol table without
/// loading it: loading runs a library's constructors, which no file that is not a plugin may do.
fn exports_handshake(path: &Path) -> Result<bool> {
    use object::{Object, ObjectSymbol};
    let bytes = std::fs::read(path).map_err(Error::io(format!("reading {}", path.display())))?;
    let file = object::File::parse(&*bytes)
        .map_err(|e| Error::LoadFailed { path: path.into(), reason: format!("not a shared library ({e})") })?;
    let wanted = &HANDSHAKE_SYMBOL[..HANDSHAKE_SYMBOL.len() - 1];
    // Mach-O prefixes C symbols with an underscore.
    let matches = |name: &[u8]| name == wanted || name.strip_prefix(b"_") == Some(wanted);
    let exported = file.exports().map_err(|e| Error::LoadFailed { path: path.into(), reason: e.to_string() })?;
    Ok(exported.iter().any(|e| matches(e.name()))
        || file.dynamic_symbols().any(|s| s.is_definition() && s.name_bytes().is_ok_and(matches)))
}

/// Reads a library's handshake, `None` when it is not a plugin at all.
fn read_handshake(path: &Path) -> Result<Option<(String, String, workbench_plugin_api::ApiVersion)>> {
    if !exports_handshake(path)? {
        return Ok(None);
    }
    let raw = RawLibrary::load_at(path).map_err(|e| Error::LoadFailed { path: path.into(), reason: e.to_string() })?;
    // SAFETY: the symbol's type is fixed for every API version (see `Handshake`).
    let handshake: Option<Handshake> =
        unsafe { raw.get::<extern "C" fn() -> Handshake>(HANDSHAKE_SYMBOL).ok().map(|f| (*f)()) };
    let result = handshake.map(|h| (h.package.to_string(), h.package_version.to_string(), h.api_version));
    // Plugins are never unloaded (their vtables and statics may be referenced until exit).
    std::mem::forget(raw);
    Ok(result)
}

/// The plugin's `configure` entry point (API 3.1, 4.1, 5.0), `None` in a plugin that exports none.
fn configure_entry_point(path: &Path) -> Result<Option<Configure>> {
    let raw = RawLibrary::load_at(path).map_err(|e| Error::LoadFailed { path: path.into(), reason: e.to_string() })?;
    // SAFETY: the symbol's type is fixed for API 5.x (see `CONFIGURE_SYMBOL`), and the plugin's
    // major version was checked before.
    let configure = unsafe { raw.get::<Configure>(CONFIGURE_SYMBOL).ok().map(|f| *f) };
    std::mem::forget(raw);
    Ok(configure)
}

/// The verdict at the end of abi_stable's layout report (which runs to hundreds of lines), on
/// one line; the whole report is logged at debug level.
fn layout_summary(report: &str) -> String {
    let verdict = report.find("\nError:").map_or(report, |start| &report[start..]);
    let mut summary = verdict.split_whitespace().collect::<Vec<_>>().join(" ");
    if summary.len() > 400 {
        let cut = (0..=400).rev().find(|&i| summary.is_char_boundary(i)).unwrap_or(0);
        summary.truncate(cut);
        summary.push_str(" ...");
    }
    format!("{summary} (run with -v for the full layout report)")
}

impl PluginLibrary {
    /// Loads a plugin: handshake and API version first, then type layout, then `init` and the
    /// manifest; in a worker process of its own where `settings.isolation` says so.
    pub fn load(path: &Path, settings: &HostSettings) -> Result<Self> {
        let Some(timeout) = settings.isolation.timeout_for(path) else {
            return Self::load_here(path, settings);
        };
        tracing::debug!(library = %path.display(), "loaded into a worker process of its own");
        if !exports_handshake(path)? {
            return Err(Error::NotAPlugin { path: path.into() });
        }
        let (worker, manifest) = Worker::spawn(path, settings, timeout)?;
        Ok(Self { path: path.into(), manifest, access: Access::Worker(Arc::new(worker)), sha256: Default::default() })
    }

    /// Loads the plugin into this process.
    fn load_here(path: &Path, settings: &HostSettings) -> Result<Self> {
        let (package, package_version, plugin_api) =
            read_handshake(path)?.ok_or_else(|| Error::NotAPlugin { path: path.into() })?;
        if !API_VERSION.accepts(plugin_api) {
            return Err(Error::IncompatibleApi {
                plugin: package,
                plugin_version: package_version,
                path: path.into(),
                plugin_api,
                host_api: API_VERSION,
            });
        }
        let header =
            lib_header_from_path(path).map_err(|e| Error::LoadFailed { path: path.into(), reason: e.to_string() })?;
        let module = header.init_root_module::<PluginModuleRef>().map_err(|e| match e {
            LibraryError::AbiInstability(_) | LibraryError::IncompatibleVersionNumber { .. } => {
                let report = e.to_string();
                tracing::debug!(plugin = %package, "full layout report:\n{report}");
                Error::IncompatibleLayout {
                    plugin: package.clone(),
                    path: path.into(),
                    plugin_api,
                    reason: layout_summary(&report),
                }
            }
            other => Error::LoadFailed { path: path.into(), reason: other.to_string() },
        })?;
        let call_error = |call: &str, source: PluginError| Error::PluginCall {
            plugin: package.clone(),
            path: path.into(),
            call: call.into(),
            source,
        };
        let context = HostContext {
            threads: settings.threads as u32,
            max_log_level: settings.max_log_level,
            log: crate::logging::plugin_log,
        };
        module.init()(context).into_result().map_err(|e| call_error("init", e))?;
        if let Some(configure) = configure_entry_point(path)? {
            configure(&settings.plugin_context()).into_result().map_err(|e| call_error("configure", e))?;
        }
        let manifest = module.manifest()().into_result().map_err(|e| call_error("manifest", e))?;
        Ok(Self { path: path.into(), manifest, access: Access::InProcess(module), sha256: Default::default() })
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// sha256 of the library file (read on first use), recorded in run manifests and in every
    /// signal-cache key of its teachers.
    pub fn sha256(&self) -> Result<String> {
        if let Some(hash) = self.sha256.get() {
            return Ok(hash.clone());
        }
        let hash = crate::assets::sha256_file(&self.path)?;
        Ok(self.sha256.get_or_init(|| hash).clone())
    }
}

/// Where a component lives, to name it in errors.
#[derive(Clone)]
struct Origin {
    library: Arc<PluginLibrary>,
    component: String,
}

impl Origin {
    fn call_name(&self, call: &str) -> String {
        format!("{call} (component `{}`)", self.component)
    }

    fn check<T>(&self, call: &str, result: RResult<T, PluginError>) -> Result<T> {
        result.into_result().map_err(|source| Error::PluginCall {
            plugin: self.library.name().into(),
            path: self.library.path.clone(),
            call: self.call_name(call),
            source,
        })
    }

    fn invalid(&self, call: &str, reason: String) -> Error {
        Error::InvalidPluginOutput { plugin: self.library.name().into(), call: self.call_name(call), reason }
    }

    /// Sends `request` to the worker and takes the answer `expected` picks out of it.
    fn remote<T>(
        &self,
        worker: &Worker,
        call: &str,
        request: Request,
        expected: impl FnOnce(Response) -> Option<T>,
    ) -> Result<T> {
        let failed = |message: String| Error::PluginCall {
            plugin: self.library.name().into(),
            path: self.library.path.clone(),
            call: self.call_name(call),
            source: PluginError::new(PluginErrorKind::Other, message),
        };
        match worker.call(call, &request).map_err(failed)? {
            Response::Failed(source) => self.check(call, RResult::RErr(source)),
            response => {
                let shown = format!("{response:?}");
                expected(response).ok_or_else(|| self.invalid(call, format!("the worker answered {shown:.80}")))
            }
        }
    }
}

/// A plugin object, in this process or in a library's worker (by its id there).
enum Instance<T> {
    Local(T),
    Remote(Arc<Worker>, u32),
}

/// A teacher created by a plugin.
pub struct TeacherHandle {
    origin: Origin,
    inner: Instance<TeacherBox>,
}

impl TeacherHandle {
    /// What the teacher declares, refused when its labels are empty or repeat a name (a
    /// repeated label would silently merge two classes in the union).
    pub fn info(&self) -> Result<TeacherInfo> {
        const CALL: &str = "Teacher::info";
        let info = match &self.inner {
            Instance::Local(teacher) => self.origin.check(CALL, teacher.info())?,
            Instance::Remote(worker, id) => {
                self.origin.remote(worker, CALL, Request::TeacherInfo { id: *id }, |r| match r {
                    Response::Info(info) => Some(info),
                    _ => None,
                })?
            }
        };
        if info.labels.is_empty() {
            return Err(self.origin.invalid(CALL, "the teacher declares no labels".into()));
        }
        let mut seen = BTreeSet::new();
        if let Some(repeated) = info.labels.iter().find(|l| !seen.insert(l.as_str())) {
            return Err(self.origin.invalid(CALL, format!("the teacher declares the label `{repeated}` twice")));
        }
        if info.labels.iter().any(|l| l.trim().is_empty()) {
            return Err(self.origin.invalid(CALL, "the teacher declares an empty label name".into()));
        }
        Ok(info)
    }

    /// Runs the teacher and checks that its output has the shape the request implies.
    pub fn forward(
        &mut self,
        texts: &[RString],
        request: &ForwardRequest,
        info: &TeacherInfo,
    ) -> Result<TeacherOutput> {
        const CALL: &str = "Teacher::forward";
        let output = match &mut self.inner {
            Instance::Local(teacher) => self.origin.check(CALL, teacher.forward(RSlice::from_slice(texts), request))?,
            Instance::Remote(worker, id) => {
                let texts = texts.iter().map(|t| t.to_string()).collect();
                let request = Request::TeacherForward { id: *id, texts, request: *request };
                self.origin.remote(worker, CALL, request, |r| match r {
                    Response::Output(output) => Some(output),
                    _ => None,
                })?
            }
        };
        let passes = match request.sampling {
            Sampling::Deterministic => 1,
            Sampling::Stochastic { passes, .. } => passes as usize,
            Sampling::Members => info.members,
        };
        output
            .logits
            .expect_shape("logits", &[passes, texts.len(), info.labels.len()])
            .map_err(|e| self.origin.invalid(CALL, e.message.into()))?;
        output.logits.check_finite("logits").map_err(|e| self.origin.invalid(CALL, e))?;
        if let Some(hidden) = output.hidden() {
            hidden
                .expect_shape("hidden state", &[texts.len(), info.hidden_size])
                .map_err(|e| self.origin.invalid(CALL, e.message.into()))?;
        }
        Ok(output)
    }
}

/// An uncertainty estimator created by a plugin.
pub struct EstimatorHandle {
    origin: Origin,
    inner: Instance<EstimatorBox>,
}

impl EstimatorHandle {
    pub fn plan(&self) -> Result<SamplingPlan> {
        const CALL: &str = "Estimator::plan";
        match &self.inner {
            Instance::Local(estimator) => self.origin.check(CALL, estimator.plan()),
            Instance::Remote(worker, id) => {
                self.origin.remote(worker, CALL, Request::EstimatorPlan { id: *id }, |r| match r {
                    Response::Plan(plan) => Some(plan),
                    _ => None,
                })
            }
        }
    }

    /// Scores the samples of every teacher, checking for a finite `[B, T]` result.
    pub fn score(&self, samples: &[TeacherSamples]) -> Result<Tensor> {
        const CALL: &str = "Estimator::score";
        let scores = match &self.inner {
            Instance::Local(estimator) => self.origin.check(CALL, estimator.score(RSlice::from_slice(samples)))?,
            Instance::Remote(worker, id) => {
                let request = Request::EstimatorScore { id: *id, samples: samples.to_vec() };
                self.origin.remote(worker, CALL, request, |r| match r {
                    Response::Scores(scores) => Some(scores),
                    _ => None,
                })?
            }
        };
        let batch = samples.first().map_or(0, TeacherSamples::texts);
        scores
            .expect_shape("scores", &[batch, samples.len()])
            .map_err(|e| self.origin.invalid(CALL, e.message.into()))?;
        scores.check_finite("scores").map_err(|e| self.origin.invalid(CALL, e))?;
        Ok(scores)
    }
}

/// An amalgamation strategy created by a plugin.
pub struct StrategyHandle {
    origin: Origin,
    inner: Instance<StrategyBox>,
}

impl StrategyHandle {
    /// Asks for a recipe and refuses one the host could not turn into a loss.
    pub fn recipe(&self, input: &StrategyInput) -> Result<Recipe> {
        const CALL: &str = "Strategy::recipe";
        let recipe = match &self.inner {
            Instance::Local(strategy) => self.origin.check(CALL, strategy.recipe(input))?,
            Instance::Remote(worker, id) => {
                let request = Request::StrategyRecipe { id: *id, input: input.clone() };
                self.origin.remote(worker, CALL, request, |r| match r {
                    Response::Recipe(recipe) => Some(recipe),
                    _ => None,
                })?
            }
        };
        recipe
            .validate(input.batch_size(), input.union_labels.len())
            .map_err(|reason| self.origin.invalid(CALL, reason))?;
        Ok(recipe)
    }
}

/// All plugins found in the plugin directories.
#[derive(Default)]
pub struct Registry {
    libraries: Vec<Arc<PluginLibrary>>,
    failures: Vec<Error>,
}

impl Registry {
    /// Where the workspace's own plugins are built: next to the `workbench` executable.
    pub fn default_dir() -> Option<PathBuf> {
        std::env::current_exe().ok()?.parent().map(Path::to_path_buf)
    }

    /// Loads every plugin library in `dirs`, in order. Libraries without a plugin handshake are
    /// skipped; libraries that fail to load are kept as failures to report.
    pub fn discover(dirs: &[PathBuf], settings: &HostSettings) -> Self {
        let mut registry = Registry::default();
        let mut seen = BTreeSet::new();
        for dir in dirs {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) => {
                    registry
                        .failures
                        .push(Error::Io { context: format!("reading plugin directory {}", dir.display()), source: e });
                    continue;
                }
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|ext| ext == std::env::consts::DLL_EXTENSION))
                .collect();
            files.sort();
            for file in files {
                if !seen.insert(file.canonicalize().unwrap_or_else(|_| file.clone())) {
                    continue;
                }
                match PluginLibrary::load(&file, settings) {
                    Ok(library) => registry.add(library),
                    Err(Error::NotAPlugin { .. }) => tracing::debug!(file = %file.display(), "not a plugin, skipped"),
                    Err(e) => registry.failures.push(e),
                }
            }
        }
        registry
    }

    /// Adds a library. A component name that another library provides too is fine until a
    /// config asks for it without saying which library to take.
    pub fn add(&mut self, library: PluginLibrary) {
        for spec in library.manifest.components.iter() {
            if let Some((first, _)) = self.components().find(|(_, c)| c.kind == spec.kind && c.name == spec.name) {
                tracing::debug!(
                    "{} and {} both provide the {} `{}`",
                    first.path.display(),
                    library.path.display(),
                    spec.kind,
                    spec.name
                );
            }
        }
        self.libraries.push(Arc::new(library));
    }

    pub fn libraries(&self) -> &[Arc<PluginLibrary>] {
        &self.libraries
    }

    pub fn failures(&self) -> &[Error] {
        &self.failures
    }

    pub fn components(&self) -> impl Iterator<Item = (&Arc<PluginLibrary>, &ComponentSpec)> {
        self.libraries.iter().flat_map(|lib| lib.manifest.components.iter().map(move |c| (lib, c)))
    }

    /// The component of `kind` named `name`, from the library file `library` or one in the
    /// directory `library` when given; an error when no library or several provide it.
    pub fn find(
        &self,
        kind: ComponentKind,
        name: &str,
        library: Option<&Path>,
    ) -> Result<(&Arc<PluginLibrary>, &ComponentSpec)> {
        let wanted = library.map(|l| l.canonicalize().unwrap_or_else(|_| l.to_path_buf()));
        let from_wanted = |lib: &PluginLibrary| {
            let path = lib.path.canonicalize().unwrap_or_else(|_| lib.path.clone());
            wanted.as_ref().is_none_or(|w| path == *w || path.parent() == Some(w.as_path()))
        };
        let found: Vec<_> =
            self.components().filter(|(lib, c)| c.kind == kind && c.name == name && from_wanted(lib)).collect();
        match found.as_slice() {
            [one] => return Ok(*one),
            [] => {}
            several => {
                return Err(Error::AmbiguousComponent {
                    kind,
                    name: name.into(),
                    libraries: several.iter().map(|(lib, _)| lib.path.clone()).collect(),
                })
            }
        }
        if let Some(library) = library {
            if self.components().any(|(_, c)| c.kind == kind && c.name == name) {
                return Err(Error::UnknownComponent {
                    kind,
                    name: name.into(),
                    hint: format!(" in {}: `library` names no loaded plugin that provides it", library.display()),
                });
            }
        }
        let available: Vec<&str> =
            self.components().filter(|(_, c)| c.kind == kind).map(|(_, c)| c.name.as_str()).collect();
        let mut hint = String::from(".");
        if let Some(close) = crate::suggest::closest(name, available.iter().copied()) {
            hint.push_str(&format!(" Did you mean `{close}`?"));
        }
        if let Some((_, other)) = self.components().find(|(_, c)| c.name == name) {
            let article = |kind: ComponentKind| if kind == ComponentKind::Estimator { "an" } else { "a" };
            hint.push_str(&format!(
                " `{name}` is {} {}, not {} {kind}.",
                article(other.kind),
                other.kind,
                article(kind)
            ));
        }
        hint.push_str(&if available.is_empty() {
            format!(" No {kind} plugins are loaded: check the plugin directories.")
        } else {
            format!(" Available: {}.", available.join(", "))
        });
        Err(Error::UnknownComponent { kind, name: name.into(), hint })
    }

    fn origin(&self, kind: ComponentKind, name: &str, library: Option<&Path>) -> Result<Origin> {
        let (library, _) = self.find(kind, name, library)?;
        Ok(Origin { library: Arc::clone(library), component: name.into() })
    }

    /// Asks the plugin (here, or its worker) to create a component: `local` makes it in this
    /// process, `request` in the worker.
    fn create<T>(
        &self,
        kind: ComponentKind,
        name: &str,
        library: Option<&Path>,
        local: impl FnOnce(&PluginModuleRef) -> RResult<T, PluginError>,
        request: Request,
    ) -> Result<(Origin, Instance<T>)> {
        let origin = self.origin(kind, name, library)?;
        let call = format!("create_{kind}");
        let instance = match &origin.library.access {
            Access::InProcess(module) => Instance::Local(origin.check(&call, local(module))?),
            Access::Worker(worker) => {
                let id = origin.remote(worker, &call, request, |r| match r {
                    Response::Created(id) => Some(id),
                    _ => None,
                })?;
                Instance::Remote(Arc::clone(worker), id)
            }
        };
        Ok((origin, instance))
    }

    pub fn create_teacher(&self, name: &str, library: Option<&Path>, params: &ParamTable) -> Result<TeacherHandle> {
        let request = Request::CreateTeacher { name: name.into(), params: params.clone() };
        let local = |module: &PluginModuleRef| (module.create_teacher())(RStr::from(name), params);
        let (origin, inner) = self.create(ComponentKind::Teacher, name, library, local, request)?;
        Ok(TeacherHandle { origin, inner })
    }

    pub fn create_estimator(&self, name: &str, library: Option<&Path>, params: &ParamTable) -> Result<EstimatorHandle> {
        let request = Request::CreateEstimator { name: name.into(), params: params.clone() };
        let local = |module: &PluginModuleRef| (module.create_estimator())(RStr::from(name), params);
        let (origin, inner) = self.create(ComponentKind::Estimator, name, library, local, request)?;
        Ok(EstimatorHandle { origin, inner })
    }

    pub fn create_strategy(&self, name: &str, library: Option<&Path>, params: &ParamTable) -> Result<StrategyHandle> {
        let request = Request::CreateStrategy { name: name.into(), params: params.clone() };
        let local = |module: &PluginModuleRef| (module.create_strategy())(RStr::from(name), params);
        let (origin, inner) = self.create(ComponentKind::Strategy, name, library, local, request)?;
        Ok(StrategyHandle { origin, inner })
    }
}

/// The worker side of process isolation: loads the library at `path` into this process, says
/// so (or why not), then answers calls from `input` on `output` until the host closes `input`.
pub fn serve_worker(
    path: &Path,
    settings: &HostSettings,
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<()> {
    let io_error = Error::io("talking to the host");
    let library = match PluginLibrary::load_here(path, settings) {
        Ok(library) => library,
        Err(e) => return write_frame(output, &Response::LoadFailed(e.to_string())).map_err(io_error),
    };
    let Access::InProcess(module) = library.access else { unreachable!("loaded here") };
    write_frame(output, &Response::Loaded(library.manifest.clone())).map_err(Error::io("talking to the host"))?;
    let (mut teachers, mut estimators, mut strategies) = (Vec::new(), Vec::new(), Vec::new());
    fn created<T>(objects: &mut Vec<T>, result: RResult<T, PluginError>) -> Response {
        match result {
            RResult::ROk(object) => {
                objects.push(object);
                Response::Created(objects.len() as u32 - 1)
            }
            RResult::RErr(e) => Response::Failed(e),
        }
    }
    fn answer<T>(result: RResult<T, PluginError>, wrap: impl FnOnce(T) -> Response) -> Response {
        match result {
            RResult::ROk(value) => wrap(value),
            RResult::RErr(e) => Response::Failed(e),
        }
    }
    let unknown = |id: u32| Response::Failed(PluginError::new(PluginErrorKind::Other, format!("no object {id}")));
    while let Some(request) = read_frame::<Request>(input).map_err(Error::io("reading a call from the host"))? {
        let response = match request {
            Request::CreateTeacher { name, params } => {
                created(&mut teachers, (module.create_teacher())(RStr::from(name.as_str()), &params))
            }
            Request::CreateEstimator { name, params } => {
                created(&mut estimators, (module.create_estimator())(RStr::from(name.as_str()), &params))
            }
            Request::CreateStrategy { name, params } => {
                created(&mut strategies, (module.create_strategy())(RStr::from(name.as_str()), &params))
            }
            Request::TeacherInfo { id } => match teachers.get(id as usize) {
                Some(teacher) => answer(teacher.info(), Response::Info),
                None => unknown(id),
            },
            Request::TeacherForward { id, texts, request } => match teachers.get_mut(id as usize) {
                Some(teacher) => {
                    let texts: Vec<RString> = texts.into_iter().map(RString::from).collect();
                    answer(teacher.forward(RSlice::from_slice(&texts), &request), Response::Output)
                }
                None => unknown(id),
            },
            Request::EstimatorPlan { id } => match estimators.get(id as usize) {
                Some(estimator) => answer(estimator.plan(), Response::Plan),
                None => unknown(id),
            },
            Request::EstimatorScore { id, samples } => match estimators.get(id as usize) {
                Some(estimator) => answer(estimator.score(RSlice::from_slice(&samples)), Response::Scores),
                None => unknown(id),
            },
            Request::StrategyRecipe { id, input } => match strategies.get(id as usize) {
                Some(strategy) => answer(strategy.recipe(&input), Response::Recipe),
                None => unknown(id),
            },
        };
        write_frame(output, &response).map_err(Error::io("answering the host"))?;
    }
    Ok(())
}
