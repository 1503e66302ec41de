//! Progress for long work (import, enroll, eval): bars on a terminal, one log
//! line per finished stage otherwise (systemd journal, CI logs).

use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone)]
pub struct Progress {
    visible: bool,
    /// Prefix for stage names, e.g. the category under evaluation.
    prefix: String,
}

impl Progress {
    /// Bars on stderr when it is a terminal, log lines when it is not.
    pub fn stderr() -> Progress {
        Progress { visible: true, prefix: String::new() }
    }

    /// Nothing shown (tests, library use).
    pub fn hidden() -> Progress {
        Progress { visible: false, prefix: String::new() }
    }

    /// The same sink with a prefix added to stage names.
    pub fn with_prefix(&self, prefix: &str) -> Progress {
        Progress { visible: self.visible, prefix: format!("{}{prefix} ", self.prefix) }
    }

    pub fn bar(&self, stage: &str, total: u64) -> Bar {
        let pb = if self.visible {
            let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            pb.set_style(
                ProgressStyle::with_template("{prefix:>20} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            pb.set_prefix(format!("{}{stage}", self.prefix));
            pb
        } else {
            ProgressBar::hidden()
        };
        Bar { pb, stage: format!("{}{stage}", self.prefix), started: Instant::now(), log: self.visible }
    }
}

pub struct Bar {
    pb: ProgressBar,
    stage: String,
    started: Instant,
    log: bool,
}

impl Bar {
    pub fn inc(&self, n: u64) {
        self.pb.inc(n)
    }

    pub fn set_position(&self, n: u64) {
        self.pb.set_position(n)
    }

    /// A short status after the bar (e.g. the current loss).
    pub fn set_message(&self, msg: String) {
        self.pb.set_message(msg)
    }

    pub fn finish(&self) {
        self.pb.finish_and_clear();
        if self.log {
            tracing::info!(stage = %self.stage, items = self.pb.position(), seconds = format!("{:.1}", self.started.elapsed().as_secs_f64()), "done");
        }
    }
}
