//! The stable plugin API of the workbench.
//!
//! A plugin is a dynamic library that provides one or more *components*: teachers, uncertainty
//! estimators and amalgamation strategies. Only plain data crosses the boundary (texts, `f32`
//! tensors with a shape, label names, parameter tables, errors as values), so a plugin author
//! needs no tensor library.
//!
//! Authors implement [`Plugin`] and the role traits ([`Teacher`], [`Estimator`], [`Strategy`])
//! with ordinary Rust types and export them with [`export_plugin!`]. The macro wraps every entry
//! point so that a panic inside the plugin comes back to the host as an error.
//!
//! Compatibility: a host loads a plugin when the API major versions match. A newer minor version
//! only adds optional entry points, as C symbols of their own that older hosts never look up and
//! newer hosts treat as absent in older plugins (`configure`, see [`plugin_context`], is such an entry
//! point). API 5.0 changed [`TeacherSamples`] and [`SamplingPlan`] (sampled passes over a share of
//! the texts), so 4.x plugins are refused.
//!
//! Feature `without-configure` builds a plugin that exports no `configure`, as one of an older
//! minor would: only for the test that the host treats that entry point as optional; never enable
//! it in a plugin.

mod context;
mod data;
mod error;
pub mod ffi;
mod floats;
mod labels;
mod logging;
pub mod math;
mod params;
mod roles;

pub use context::{directory_or_asset, plugin_context, PluginContext};
pub use data::*;
pub use error::{PluginError, PluginErrorKind, PluginResult};
pub use labels::LabelSpace;
pub use params::*;
pub use roles::*;

/// Re-exported so that plugin crates and the host use the very same version.
pub use abi_stable;
/// The texts a teacher receives: abi_stable's string, which dereferences to `str`. It is the only
/// boundary type plugin code names; everything else it reads or builds through std types
/// (`Vec`, `Option`, `&[f32]`: see the constructors and accessors of the data types).
pub use abi_stable::std_types::RString;

/// The version of this API, checked by the host at load time.
pub const API_VERSION: ApiVersion = ApiVersion { major: 5, minor: 0 };

/// Version of the plugin API, compared by the host before anything else is read from a plugin.
#[repr(C)]
#[derive(abi_stable::StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

impl ApiVersion {
    /// A host speaking `self` can use a plugin built against `plugin`: same major version.
    pub fn accepts(self, plugin: ApiVersion) -> bool {
        self.major == plugin.major
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod version_tests {
    /// A plugin author's Cargo sees the crate version; the host checks `API_VERSION`: one number.
    #[test]
    fn the_crate_version_is_the_api_version() {
        let version = env!("CARGO_PKG_VERSION");
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap());
        let (major, minor) = (parts.next().unwrap(), parts.next().unwrap());
        assert_eq!((major, minor), (super::API_VERSION.major, super::API_VERSION.minor), "crate {version}");
    }
}
