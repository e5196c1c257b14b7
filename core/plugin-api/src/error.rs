use abi_stable::{std_types::RString, StableAbi};

/// What went wrong inside a plugin, as a value that crosses the boundary.
#[repr(u8)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginErrorKind {
    /// The input given to the plugin is unusable (bad shape, unknown label, bad parameter).
    InvalidInput,
    /// The plugin does not provide what was asked (unknown component, unsupported pass).
    Unsupported,
    /// A file or resource could not be read.
    Io,
    /// The plugin panicked; the panic was caught at the boundary.
    Panic,
    /// Anything else.
    Other,
}

/// An error returned by a plugin.
#[repr(C)]
#[derive(StableAbi, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    pub kind: PluginErrorKind,
    pub message: RString,
}

pub type PluginResult<T> = Result<T, PluginError>;

impl PluginError {
    pub fn new(kind: PluginErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: RString::from(message.into()) }
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(PluginErrorKind::InvalidInput, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(PluginErrorKind::Unsupported, message)
    }

    pub fn io(message: impl Into<String>) -> Self {
        Self::new(PluginErrorKind::Io, message)
    }

    pub fn other(message: impl Into<String>) -> Self {
        Self::new(PluginErrorKind::Other, message)
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            PluginErrorKind::Panic => write!(f, "panicked: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for PluginError {}
