//! Host logging: `tracing` with `RUST_LOG`-style filters, `-v`/`-q`, and the callback through
//! which plugins' log lines reach the host.

use std::io::IsTerminal;

use abi_stable::std_types::RStr;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;
use workbench_plugin_api::LogLevel;

/// The default level for a `-v` count minus a `-q` count: info, then debug, trace; warn, error.
pub fn level_for(verbosity: i8) -> LevelFilter {
    match verbosity {
        i8::MIN..=-2 => LevelFilter::ERROR,
        -1 => LevelFilter::WARN,
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Installs the host's subscriber on stderr, in colour only where stderr is a terminal. `RUST_LOG`, when set, overrides the verbosity.
pub fn init(verbosity: i8) -> LogLevel {
    let filter = EnvFilter::builder().with_default_directive(level_for(verbosity).into()).from_env_lossy();
    // Colour codes only on a terminal: a redirected log (a file, a Slurm job's output) stays plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
    match LevelFilter::current() {
        LevelFilter::OFF | LevelFilter::ERROR => LogLevel::Error,
        LevelFilter::WARN => LogLevel::Warn,
        LevelFilter::INFO => LogLevel::Info,
        LevelFilter::DEBUG => LogLevel::Debug,
        _ => LogLevel::Trace,
    }
}

/// Receives a plugin's log line and re-emits it in the host's log.
pub extern "C" fn plugin_log(level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
    let (target, message) = (target.as_str(), message.as_str());
    match level {
        LogLevel::Error => tracing::error!(plugin = target, "{message}"),
        LogLevel::Warn => tracing::warn!(plugin = target, "{message}"),
        LogLevel::Info => tracing::info!(plugin = target, "{message}"),
        LogLevel::Debug => tracing::debug!(plugin = target, "{message}"),
        LogLevel::Trace => tracing::trace!(plugin = target, "{message}"),
    }
}
