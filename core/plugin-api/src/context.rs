//! Where a plugin runs (API 3.1, 4.1, 5.0): the host's asset cache, the config file's directory and
//! the host's asset resolver, given once after loading through the optional `configure` entry point.
//! A plugin reads it with [`plugin_context`]; under a 3.0 host there is none.

use std::{
    path::PathBuf,
    sync::{PoisonError, RwLock},
};

use abi_stable::{
    std_types::{ROption, RResult, RStr, RString},
    StableAbi,
};

use crate::{PluginError, PluginResult};

/// What the host tells a plugin about where it runs.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct PluginContext {
    /// The asset cache: the config's `cache`, else `WORKBENCH_CACHE`, else the user's cache.
    pub cache_dir: RString,
    /// The directory of the config file the plugin was loaded for; none for `plugins list`.
    pub config_dir: ROption<RString>,
    /// The host's asset resolver: asset name and cache directory in, the directory holding the
    /// asset's contents out (fetched, checked by sha256 and unpacked first when needed).
    pub resolve_asset: extern "C" fn(RStr<'_>, RStr<'_>) -> RResult<RString, PluginError>,
}

impl PluginContext {
    /// The directory of the pinned asset `name` (`minilm`: the pre-trained MiniLM checkpoint),
    /// fetched and checked by the host when it is not in the cache yet.
    pub fn asset(&self, name: &str) -> PluginResult<PathBuf> {
        let resolved: PluginResult<RString> = (self.resolve_asset)(RStr::from(name), self.cache_dir.as_rstr()).into();
        Ok(PathBuf::from(resolved?.into_string()))
    }

    pub fn cache_dir(&self) -> PathBuf {
        PathBuf::from(self.cache_dir.as_str())
    }

    pub fn config_dir(&self) -> Option<PathBuf> {
        self.config_dir.as_ref().map(|dir| PathBuf::from(dir.as_str())).into_option()
    }
}

/// Every cdylib has its own copy of this crate, so each plugin keeps the context it was given.
static CONTEXT: RwLock<Option<PluginContext>> = RwLock::new(None);

/// The context the host gave this plugin, if it gave one (hosts from API 3.1 on do, right after
/// `init`).
pub fn plugin_context() -> Option<PluginContext> {
    CONTEXT.read().unwrap_or_else(PoisonError::into_inner).clone()
}

pub(crate) fn set_plugin_context(context: PluginContext) {
    *CONTEXT.write().unwrap_or_else(PoisonError::into_inner) = Some(context);
}

/// Resolves `entry` as a directory: an existing path as it is, else a pinned asset's name
/// through the host. `what` names the parameter in the error.
pub fn directory_or_asset(entry: &str, what: &str) -> PluginResult<PathBuf> {
    let path = PathBuf::from(entry);
    if path.exists() || entry.contains(std::path::MAIN_SEPARATOR) {
        return Ok(path);
    }
    match plugin_context() {
        Some(context) => context.asset(entry).map_err(|e| {
            PluginError::invalid_input(format!(
                "{what} `{entry}` is neither a path that exists (relative to the working directory) nor a pinned asset: {}",
                e.message
            ))
        }),
        None => Ok(path),
    }
}
