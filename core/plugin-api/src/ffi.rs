//! The boundary itself: the root module every plugin exports, the FFI-safe role objects, and
//! the panic guard around every entry point. Plugin authors only use [`crate::export_plugin!`].

// `#[sabi_trait]` expands to impls inside generated constants.
#![allow(non_local_definitions)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    prefix_type::PrefixTypeTrait,
    sabi_trait,
    sabi_trait::TD_Opaque,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RSlice, RStr, RString},
    StableAbi,
};

use crate::{
    logging, ApiVersion, Estimator, ForwardRequest, HostContext, ParamTable, Plugin, PluginContext, PluginError,
    PluginErrorKind, PluginManifest, PluginResult, Recipe, SamplingPlan, Strategy, StrategyInput, Teacher, TeacherInfo,
    TeacherOutput, TeacherSamples, Tensor,
};

/// Name of the plain C symbol returning a [`Handshake`]. The host reads it before anything else,
/// so a version mismatch is reported by name even when every other layout differs.
pub const HANDSHAKE_SYMBOL: &[u8] = b"workbench_plugin_handshake\0";

/// Name of the plain C symbol of the optional `configure` entry point (API 3.1, 4.1, 5.0), of type
/// [`Configure`]. Entry points a minor version adds are symbols of their own, looked up by name:
/// abi_stable refuses a root module with fewer fields than the host's, so the module's layout
/// stays as it is for a whole major version.
pub const CONFIGURE_SYMBOL: &[u8] = b"workbench_plugin_configure\0";

/// `configure`: where the plugin runs ([`PluginContext`], whose layout is fixed for API 5.x),
/// given once right after `init`.
pub type Configure = extern "C" fn(&PluginContext) -> RResult<(), PluginError>;

/// What a plugin says before it is loaded. Its layout never changes, whatever the API version.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Handshake {
    pub api_version: ApiVersion,
    /// The plugin's package name and version, for messages.
    pub package: RStr<'static>,
    pub package_version: RStr<'static>,
}

#[sabi_trait]
pub trait FfiTeacher: Send {
    fn info(&self) -> RResult<TeacherInfo, PluginError>;

    #[sabi(last_prefix_field)]
    fn forward(&mut self, texts: RSlice<'_, RString>, request: &ForwardRequest) -> RResult<TeacherOutput, PluginError>;
}

#[sabi_trait]
pub trait FfiEstimator: Send {
    fn plan(&self) -> RResult<SamplingPlan, PluginError>;

    #[sabi(last_prefix_field)]
    fn score(&self, samples: RSlice<'_, TeacherSamples>) -> RResult<Tensor, PluginError>;
}

#[sabi_trait]
pub trait FfiStrategy: Send {
    #[sabi(last_prefix_field)]
    fn recipe(&self, input: &StrategyInput) -> RResult<Recipe, PluginError>;
}

pub type TeacherBox = FfiTeacher_TO<'static, RBox<()>>;
pub type EstimatorBox = FfiEstimator_TO<'static, RBox<()>>;
pub type StrategyBox = FfiStrategy_TO<'static, RBox<()>>;

/// The root module of a plugin, the same for every minor version of an API major version (see
/// [`CONFIGURE_SYMBOL`] for how a minor version adds entry points).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    pub init: extern "C" fn(HostContext) -> RResult<(), PluginError>,
    pub manifest: extern "C" fn() -> RResult<PluginManifest, PluginError>,
    pub create_teacher: extern "C" fn(RStr<'_>, &ParamTable) -> RResult<TeacherBox, PluginError>,
    pub create_estimator: extern "C" fn(RStr<'_>, &ParamTable) -> RResult<EstimatorBox, PluginError>,
    #[sabi(last_prefix_field)]
    pub create_strategy: extern "C" fn(RStr<'_>, &ParamTable) -> RResult<StrategyBox, PluginError>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "workbench_plugin";
    const NAME: &'static str = "workbench_plugin";
    // Pins abi_stable's own check to the API major version; minor versions are handled by the
    // host's handshake and by the prefix layout, which tolerates added trailing entry points.
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.0.0");
}

/// Runs `call`, turning a panic into a [`PluginErrorKind::Panic`] error.
pub fn guard<T>(call: impl FnOnce() -> PluginResult<T>) -> RResult<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(result) => result.into(),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with a non-text payload".to_string());
            RResult::RErr(PluginError::new(PluginErrorKind::Panic, message))
        }
    }
}

struct GuardedTeacher(Box<dyn Teacher>);
struct GuardedEstimator(Box<dyn Estimator>);
struct GuardedStrategy(Box<dyn Strategy>);

impl FfiTeacher for GuardedTeacher {
    fn info(&self) -> RResult<TeacherInfo, PluginError> {
        guard(|| self.0.info())
    }

    fn forward(&mut self, texts: RSlice<'_, RString>, request: &ForwardRequest) -> RResult<TeacherOutput, PluginError> {
        guard(|| self.0.forward(texts.as_slice(), request))
    }
}

impl FfiEstimator for GuardedEstimator {
    fn plan(&self) -> RResult<SamplingPlan, PluginError> {
        guard(|| Ok(self.0.plan()))
    }

    fn score(&self, samples: RSlice<'_, TeacherSamples>) -> RResult<Tensor, PluginError> {
        guard(|| self.0.score(samples.as_slice()))
    }
}

impl FfiStrategy for GuardedStrategy {
    fn recipe(&self, input: &StrategyInput) -> RResult<Recipe, PluginError> {
        guard(|| self.0.recipe(input))
    }
}

extern "C" fn init<P: Plugin>(context: HostContext) -> RResult<(), PluginError> {
    guard(|| {
        logging::forward_to_host(context);
        P::init(context.threads as usize)
    })
}

/// The `configure` entry point every plugin exports (through [`crate::export_plugin!`]): keeps
/// the context for [`crate::plugin_context`].
pub extern "C" fn configure(context: &PluginContext) -> RResult<(), PluginError> {
    guard(|| {
        crate::context::set_plugin_context(context.clone());
        Ok(())
    })
}

extern "C" fn manifest<P: Plugin>() -> RResult<PluginManifest, PluginError> {
    guard(|| Ok(P::manifest()))
}

extern "C" fn create_teacher<P: Plugin>(component: RStr<'_>, params: &ParamTable) -> RResult<TeacherBox, PluginError> {
    guard(|| {
        let teacher = P::create_teacher(component.as_str(), params)?;
        Ok(FfiTeacher_TO::from_value(GuardedTeacher(teacher), TD_Opaque))
    })
}

extern "C" fn create_estimator<P: Plugin>(
    component: RStr<'_>,
    params: &ParamTable,
) -> RResult<EstimatorBox, PluginError> {
    guard(|| {
        let estimator = P::create_estimator(component.as_str(), params)?;
        Ok(FfiEstimator_TO::from_value(GuardedEstimator(estimator), TD_Opaque))
    })
}

extern "C" fn create_strategy<P: Plugin>(
    component: RStr<'_>,
    params: &ParamTable,
) -> RResult<StrategyBox, PluginError> {
    guard(|| {
        let strategy = P::create_strategy(component.as_str(), params)?;
        Ok(FfiStrategy_TO::from_value(GuardedStrategy(strategy), TD_Opaque))
    })
}

/// The root module of plugin `P`; called once by the loader through [`crate::export_plugin!`].
pub fn module<P: Plugin>() -> PluginModuleRef {
    let module = PluginModule {
        init: init::<P>,
        manifest: manifest::<P>,
        create_teacher: create_teacher::<P>,
        create_estimator: create_estimator::<P>,
        create_strategy: create_strategy::<P>,
    };
    module.leak_into_prefix()
}

/// The manifest of the calling plugin crate: its package name and version, this API version
/// and the given components.
#[macro_export]
macro_rules! manifest {
    ($($component:expr),* $(,)?) => {
        $crate::PluginManifest {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            api_version: $crate::API_VERSION,
            components: vec![$($component),*].into(),
        }
    };
}

/// Exports a type implementing [`crate::Plugin`] as a workbench plugin.
///
/// The plugin crate must be a `cdylib` and list `abi_stable` among its dependencies (the
/// exported header names it by its crate path).
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[::abi_stable::export_root_module]
        fn workbench_plugin_root_module() -> $crate::ffi::PluginModuleRef {
            $crate::ffi::module::<$plugin>()
        }

        /// The API version this plugin was built against, read by the host before loading.
        #[no_mangle]
        pub extern "C" fn workbench_plugin_handshake() -> $crate::ffi::Handshake {
            $crate::ffi::Handshake {
                api_version: $crate::API_VERSION,
                package: $crate::abi_stable::std_types::RStr::from_str(env!("CARGO_PKG_NAME")),
                package_version: $crate::abi_stable::std_types::RStr::from_str(env!("CARGO_PKG_VERSION")),
            }
        }

        $crate::__export_entry_points_of_this_minor!();
    };
}

/// The entry points a minor version added (`configure`: 3.1, again 4.1, kept in 5.0), exported as plain C symbols.
#[cfg(not(feature = "without-configure"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_entry_points_of_this_minor {
    () => {
        /// Where the plugin runs, from the host (API 3.1, 4.1, 5.0).
        #[no_mangle]
        pub extern "C" fn workbench_plugin_configure(
            context: &$crate::PluginContext,
        ) -> $crate::abi_stable::std_types::RResult<(), $crate::PluginError> {
            $crate::ffi::configure(context)
        }
    };
}

/// A plugin without `configure` (feature `without-configure`) has no entry points beyond the root module.
#[cfg(feature = "without-configure")]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_entry_points_of_this_minor {
    () => {};
}
