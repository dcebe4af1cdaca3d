//! How a first build shows that it is moving: on a terminal, an indicatif bar driven by cargo's
//! compilation units (`Building writer, reader  142/233  serde_json`), or a spinner with the
//! tool's last line while npm installs; elsewhere (a pipe, CI, a log file), a plain line every
//! few seconds, so a long build is never silent.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::output;
use crate::supervisor::build::Progress;

/// How often a plain line is printed while a build runs off a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(3);

pub struct BuildView {
    what: String,
    bar: Option<ProgressBar>,
    plain: Mutex<Plain>,
}

/// What the next plain line says, and when it is due.
struct Plain {
    last_printed: Instant,
    state: String,
}

impl BuildView {
    /// `what` names the services being built.
    pub fn new(what: String) -> BuildView {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} Building {prefix} {wide_msg}")
                    .expect("the template is a fixed, valid string"),
            );
            bar.set_prefix(what.clone());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        BuildView {
            what,
            bar,
            plain: Mutex::new(Plain {
                last_printed: Instant::now(),
                state: "starting".into(),
            }),
        }
    }

    /// Takes one piece of progress from the build.
    pub fn update(&self, progress: Progress<'_>) {
        let state = match progress {
            Progress::Compiled {
                done,
                total: Some(total),
                unit,
            } => {
                if let Some(bar) = &self.bar {
                    if bar.length() != Some(total as u64) {
                        bar.set_style(
                            ProgressStyle::with_template(
                                "{spinner} Building {prefix}  {pos}/{len}  {wide_msg}",
                            )
                            .expect("the template is a fixed, valid string"),
                        );
                        bar.set_length(total as u64);
                    }
                    bar.set_position(done as u64);
                    bar.set_message(unit.to_string());
                }
                format!("{done}/{total} ({unit})")
            }
            Progress::Compiled { done, unit, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_message(format!("{done} compiled ({unit})"));
                }
                format!("{done} units compiled ({unit})")
            }
            // cargo's own `Compiling x` lines say less than the counts; other lines (npm's)
            // are what there is to show.
            Progress::Said(line) => {
                // `pip install (web)` names the service a line is of; said of the only service
                // being built, `Building web: pip install` says it already.
                let line = line
                    .strip_suffix(&format!(" ({})", self.what))
                    .unwrap_or(line);
                if let Some(bar) = &self.bar {
                    if bar.length().is_none() {
                        bar.set_message(line.to_string());
                    }
                }
                if line.starts_with("Compiling ") || line.starts_with("Fresh ") {
                    return;
                }
                line.to_string()
            }
        };
        if self.bar.is_none() {
            self.plain
                .lock()
                .expect("never poisoned: no panics while held")
                .state = state;
            self.tick();
        }
    }

    /// The build is over: the bar goes away.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Off a terminal, a line is due even when the build says nothing for a while (a slow
    /// build script): called on a timer.
    pub fn tick(&self) {
        if self.bar.is_some() {
            return;
        }
        let mut plain = self
            .plain
            .lock()
            .expect("never poisoned: no panics while held");
        if plain.last_printed.elapsed() >= PLAIN_EVERY {
            plain.last_printed = Instant::now();
            output::info(format!("Building {}: {}", self.what, plain.state));
        }
    }
}
