//! Progress lines in the style of kind: one line per step, a spinner while
//! it runs, then ✓ or ✗ and how long it took.
//!
//! Everything here goes to stderr, so stdout stays clean for data
//! (`eval "$(goblog-lab env)"`, `--output json`). When either is not a
//! terminal (CI, a pipe, a log file) spinners would be noise, so each step
//! prints plain lines instead.
//!
//! A caller that runs several labs' work at once in one process (a
//! classroom) gives each its own [`Sink`] instead: the same plain lines,
//! delivered to it rather than to stderr, so they never interleave.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Where a [`Ui`] made with [`Ui::to_sink`] delivers its lines: one line
/// at a time, without its newline, as stderr would have shown it.
pub trait Sink: Send + Sync {
    fn line(&self, line: &str);
}

impl<F: Fn(&str) + Send + Sync> Sink for F {
    fn line(&self, line: &str) {
        self(line)
    }
}

#[derive(Clone)]
pub struct Ui {
    /// Lines go here instead of stderr.
    sink: Option<Arc<dyn Sink>>,
    fancy: bool,
    quiet: bool,
    verbose: bool,
    started: Instant,
    /// The spinner on screen, so that warnings print above it, not through it.
    active: Arc<Mutex<Option<ProgressBar>>>,
}

impl Ui {
    pub fn new(quiet: bool, verbose: bool) -> Self {
        Ui {
            sink: None,
            fancy: std::io::stderr().is_terminal()
                && std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none(),
            quiet,
            verbose: verbose && !quiet,
            started: Instant::now(),
            active: Arc::default(),
        }
    }

    /// A Ui whose lines (steps, warnings and, with `verbose`, details) go to
    /// `sink` as plain lines, never to the terminal.
    pub fn to_sink(sink: Arc<dyn Sink>, verbose: bool) -> Self {
        Ui {
            sink: Some(sink),
            fancy: false,
            quiet: false,
            verbose,
            started: Instant::now(),
            active: Arc::default(),
        }
    }

    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    pub fn is_verbose(&self) -> bool {
        self.verbose
    }

    /// Starts a step; finish it with [`Step::done`]. A step dropped unfinished
    /// (an error, Ctrl-C) is marked failed.
    pub fn step(&self, message: impl Into<String>) -> Step {
        let message = message.into();
        let bar = if self.quiet {
            None
        } else if self.fancy {
            let bar = ProgressBar::new_spinner().with_message(message.clone());
            bar.set_style(
                ProgressStyle::with_template(" {spinner:.cyan} {msg} {elapsed:.dim}")
                    .expect("static template")
                    .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
            );
            bar.enable_steady_tick(Duration::from_millis(80));
            *self.active.lock().unwrap() = Some(bar.clone());
            Some(bar)
        } else {
            self.emit(&format!(" • {message} ..."));
            None
        };
        Step {
            ui: self.clone(),
            message,
            bar,
            started: Instant::now(),
            finished: false,
        }
    }

    /// A status line that rewrites itself while something long runs
    /// (`bench`'s live rate), or None when quiet or not on a terminal: the
    /// caller then prints a plain [`Ui::info`] line now and then instead.
    /// [`Ui::end_live`] takes it off the screen.
    pub fn live(&self) -> Option<ProgressBar> {
        if self.quiet || !self.fancy {
            return None;
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template(" {spinner:.cyan} {msg}")
                .expect("static template")
                .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
        );
        bar.enable_steady_tick(Duration::from_millis(80));
        *self.active.lock().unwrap() = Some(bar.clone());
        Some(bar)
    }

    pub fn end_live(&self, bar: &ProgressBar) {
        bar.finish_and_clear();
        *self.active.lock().unwrap() = None;
    }

    /// A line of its own (a fallback taken, a hint), above any spinner.
    pub fn warn(&self, message: impl AsRef<str>) {
        self.line(&format!(" ! {}", message.as_ref()));
    }

    /// A timed detail inside a step (`--verbose`): which node, which push.
    pub fn detail(&self, message: impl AsRef<str>) {
        if self.verbose {
            let at = self.started.elapsed().as_secs_f64();
            self.line(&format!("   [{at:6.2}s] {}", message.as_ref()));
        }
    }

    pub fn info(&self, message: impl AsRef<str>) {
        self.line(&format!("   {}", message.as_ref()));
    }

    fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        if let Some(sink) = &self.sink {
            return sink.line(text);
        }
        match self.active.lock().unwrap().as_ref() {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }
}

impl Ui {
    /// A line of a step's own: to the sink, else to stderr.
    fn emit(&self, line: &str) {
        match &self.sink {
            Some(sink) => sink.line(line),
            None => eprintln!("{line}"),
        }
    }
}

pub struct Step {
    ui: Ui,
    message: String,
    bar: Option<ProgressBar>,
    started: Instant,
    finished: bool,
}

impl Step {
    pub fn done(mut self) {
        self.finish(true);
    }

    /// Finishes with a note after the message, e.g. "(cached)".
    pub fn done_with(mut self, note: impl AsRef<str>) {
        self.message = format!("{} {}", self.message, note.as_ref());
        self.finish(true);
    }

    fn finish(&mut self, ok: bool) {
        if self.finished {
            return;
        }
        self.finished = true;
        let mark = if ok { "✓" } else { "✗" };
        let line = format!(
            " {mark} {} ({})",
            self.message,
            seconds(self.started.elapsed())
        );
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            *self.ui.active.lock().unwrap() = None;
        }
        if !self.ui.quiet {
            self.ui.emit(&line);
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        self.finish(false);
    }
}

pub fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_gets_every_line_of_its_own_ui_and_nothing_else() {
        let lines = |ui: &Ui| {
            let step = ui.step("Starting nodes");
            ui.detail("a detail");
            ui.warn("a warning");
            step.done();
            drop(ui.step("Failing"));
        };
        let got = Arc::new(Mutex::new(Vec::<String>::new()));
        let other = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = {
            let got = got.clone();
            move |line: &str| got.lock().unwrap().push(line.to_string())
        };
        let ui = Ui::to_sink(Arc::new(sink), false);
        let other_ui = {
            let other = other.clone();
            Ui::to_sink(
                Arc::new(move |line: &str| other.lock().unwrap().push(line.to_string())),
                true,
            )
        };
        lines(&ui);
        other_ui.info("elsewhere");
        let got = got.lock().unwrap();
        assert_eq!(got[0], " • Starting nodes ...");
        assert_eq!(got[1], " ! a warning");
        assert!(got[2].starts_with(" ✓ Starting nodes ("), "{got:?}");
        assert_eq!(got[3], " • Failing ...");
        assert!(got[4].starts_with(" ✗ Failing ("), "{got:?}");
        assert_eq!(got.len(), 5, "no detail without verbose: {got:?}");
        assert_eq!(*other.lock().unwrap(), vec!["   elsewhere".to_string()]);
    }
}
