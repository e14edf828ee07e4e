//! Progress of long work: a bar on a terminal, plain lines (at most one a second) otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Reports progress of one job.
pub struct Progress {
    label: String,
    /// The named step running now (a backup's "index files", "database", ...).
    step: Mutex<Option<String>>,
    bar: Option<ProgressBar>,
    last_line: Mutex<Option<Instant>>,
    started: Instant,
}

impl Progress {
    /// A progress report for `label`, counting `unit`s.
    pub fn new(label: &str, unit: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            let template = format!(
                "{label}{{msg}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, {{eta}} left)"
            );
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Progress {
            label: label.to_string(),
            step: Mutex::new(None),
            bar,
            last_line: Mutex::new(None),
            started: Instant::now(),
        }
    }

    /// Names the step running now (shown after the label; a line of its own without a
    /// terminal), or none.
    pub fn step(&self, step: Option<&str>) {
        let mut current = self.step.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_deref() == step {
            return;
        }
        *current = step.map(str::to_string);
        match (&self.bar, step) {
            (Some(bar), _) => bar.set_message(step.map(|s| format!(" ({s})")).unwrap_or_default()),
            // Without a bar, a new step is a line of its own at once.
            (None, Some(step)) => eprintln!("{} ({step})", self.label),
            (None, None) => {}
        }
    }

    /// Reports `done` of `total`.
    pub fn set(&self, done: u64, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) || done >= total;
        if due {
            let pct = (done * 100).checked_div(total).unwrap_or(100);
            let step = self.step.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let step = step.map(|s| format!(" ({s})")).unwrap_or_default();
            eprintln!("{}{step}: {done}/{total} ({pct}%)", self.label);
            *last = Some(Instant::now());
        }
    }

    /// Seconds since the job began.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Ends the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
