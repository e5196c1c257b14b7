//! Forwards a plugin's `tracing` events to the host: every cdylib has its own dispatcher, so
//! without this a plugin's log lines would vanish.

use std::fmt::Write;

use abi_stable::std_types::RStr;
use tracing::{
    field::{Field, Visit},
    span, Event, Level, Metadata, Subscriber,
};

use crate::{HostContext, LogLevel};

struct ForwardToHost(HostContext);

fn log_level(level: &Level) -> LogLevel {
    match *level {
        Level::ERROR => LogLevel::Error,
        Level::WARN => LogLevel::Warn,
        Level::INFO => LogLevel::Info,
        Level::DEBUG => LogLevel::Debug,
        _ => LogLevel::Trace,
    }
}

/// Collects an event's message and fields into one line.
#[derive(Default)]
struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }
}

impl Subscriber for ForwardToHost {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        log_level(metadata.level()) <= self.0.max_log_level
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = Line::default();
        event.record(&mut line);
        let metadata = event.metadata();
        (self.0.log)(log_level(metadata.level()), RStr::from(metadata.target()), RStr::from(line.0.as_str()));
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

/// Installs the forwarder as this plugin's global dispatcher; a second call keeps the first.
pub(crate) fn forward_to_host(context: HostContext) {
    let _ = tracing::subscriber::set_global_default(ForwardToHost(context));
}
