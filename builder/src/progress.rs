//! Progress output for long transfers: an indicatif bar per blob when
//! stderr is a terminal, and one line per finished blob otherwise (logs,
//! CI), so both people and scripts can follow a push or a pull.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The progress display of one command.
pub struct Progress {
    bars: Option<MultiProgress>,
    quiet: bool,
}

/// One transfer's progress.
pub struct Task {
    bar: Option<ProgressBar>,
    label: String,
    quiet: bool,
}

impl Progress {
    /// Bars on a terminal, lines elsewhere, nothing when `quiet`.
    pub fn new(quiet: bool) -> Self {
        let tty = std::io::stderr().is_terminal() && !quiet;
        Self {
            bars: tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            quiet,
        }
    }

    /// Starts a task of `total` bytes called `label`.
    pub fn task(&self, label: &str, total: u64) -> Task {
        let bar = self.bars.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:<20} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_owned());
            bar
        });
        Task {
            bar,
            label: label.into(),
            quiet: self.quiet,
        }
    }

    /// Prints a line (above the bars on a terminal).
    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some(m) => m.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }
}

impl Task {
    /// `n` more bytes done.
    pub fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Done: `outcome` says how (`pushed 2.1 MiB`, `exists`).
    pub fn finish(self, outcome: &str) {
        match self.bar {
            Some(b) => b.finish_with_message(outcome.to_owned()),
            None if !self.quiet => eprintln!("kiln: {}: {outcome}", self.label),
            None => {}
        }
    }

    /// Failed: the bar goes; the caller reports the error.
    pub fn abandon(self) {
        if let Some(b) = self.bar {
            b.abandon();
        }
    }
}

/// `n` bytes for people: `204.0 KiB`, `2.6 MiB`.
pub fn human_size(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}
