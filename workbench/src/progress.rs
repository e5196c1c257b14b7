//! Progress of long work: a bar where stderr is a terminal; where it is not (a redirected log, a
//! Slurm job's output file), where a bar draws nothing, log lines instead: the bar's own lines,
//! and the count at most once a minute, so that such a log still shows the work moving.

use std::{
    cell::Cell,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    /// What is counted, for the log lines ("texts", "steps").
    unit: &'static str,
    log_every: Duration,
    last_line: Cell<Instant>,
}

impl Progress {
    /// Counts `total` `unit`s of the work the message names; the bar shows `template`'s fields.
    fn new(total: usize, message: String, unit: &'static str, template: &str) -> Self {
        let bar = ProgressBar::new(total as u64).with_message(message);
        bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
        Self { bar, unit, log_every: Duration::from_secs(60), last_line: Cell::new(Instant::now()) }
    }

    /// Training steps, with the elapsed time.
    pub fn steps(total: usize, message: impl Into<String>) -> Self {
        Self::new(total, message.into(), "steps", "{msg} [{bar:30}] {pos}/{len} steps, {elapsed} (eta {eta})")
    }

    /// Texts passed through a model.
    pub fn texts(total: usize, message: impl Into<String>) -> Self {
        Self::new(total, message.into(), "texts", "{msg} [{bar:30}] {pos}/{len} texts, eta {eta}")
    }

    /// Items of any other kind (`unit` names them in log lines).
    pub fn items(total: usize, message: impl Into<String>, unit: &'static str) -> Self {
        Self::new(total, message.into(), unit, "{msg} [{bar:30}] {pos}/{len}")
    }

    pub fn set_position(&self, position: u64) {
        self.bar.set_position(position);
    }

    pub fn set_message(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    pub fn inc(&self, done: u64) {
        self.bar.inc(done);
        if self.bar.is_hidden() && self.last_line.get().elapsed() >= self.log_every {
            self.last_line.set(Instant::now());
            let (position, total) = (self.bar.position(), self.bar.length().unwrap_or(0));
            let eta = self.bar.eta().as_secs();
            tracing::info!("{}: {position}/{total} {}, about {eta} s left", self.bar.message(), self.unit);
        }
    }

    /// A line above the bar, or in the log where there is no bar.
    pub fn println(&self, line: impl AsRef<str>) {
        if self.bar.is_hidden() {
            tracing::info!("{}", line.as_ref());
        } else {
            self.bar.println(line);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{Arc, Mutex},
        time::Duration,
    };

    use indicatif::ProgressDrawTarget;

    use super::Progress;

    /// A log sink the test reads back.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn without_a_terminal_the_count_and_the_bars_lines_go_to_the_log() {
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || sink.clone()).with_ansi(false).with_target(false).finish();
        tracing::subscriber::with_default(subscriber, || {
            let mut progress = Progress::texts(10, "teacher `a`");
            progress.bar.set_draw_target(ProgressDrawTarget::hidden());
            progress.inc(4);
            progress.log_every = Duration::ZERO;
            progress.inc(3);
            progress.println("epoch 1: loss 0.5000");
            progress.finish();
        });
        let log = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let messages: Vec<&str> = log.lines().map(|l| l.split_once("INFO ").unwrap().1.trim()).collect();
        assert_eq!(messages.len(), 2, "{log}");
        assert!(messages[0].starts_with("teacher `a`: 7/10 texts, about "), "{log}");
        assert_eq!(messages[1], "epoch 1: loss 0.5000");
    }
}
