//! Progress on stderr, in one place for every command that shows it. On a
//! terminal an operation's counts are a bar redrawn in place; anywhere else
//! (a pipe, a log file, CI) they are plain lines, one per change and at most
//! about one a second, never a carriage return. The steps of a sequence
//! (building an image, starting a VM) are a line each everywhere.

use std::io::{IsTerminal as _, Write};
use std::time::{Duration, Instant};

/// How far an operation over many items (a scale set's instances) got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Items that succeeded.
    pub(crate) done: u64,
    /// Items that failed.
    pub(crate) failed: u64,
    /// All items, finished or not.
    pub(crate) total: u64,
}

/// The shortest gap between two plain counts lines.
const MIN_GAP: Duration = Duration::from_secs(1);

/// The bar's width in characters.
const BAR_WIDTH: u64 = 24;

/// Shows an operation's progress: a bar on a terminal, lines elsewhere.
/// Dropping it ends the bar's line, or prints the last counts not yet
/// printed.
pub(crate) struct Reporter<W: Write = std::io::Stderr> {
    out: W,
    terminal: bool,
    t0: Instant,
    /// The latest counts (as a plain line says them) and when they came,
    /// relative to `t0`.
    latest: Option<(String, Duration)>,
    /// The counts the last plain line said, and when it was printed.
    printed: Option<(String, Instant)>,
    /// A bar is on the terminal's current line.
    bar_drawn: bool,
}

impl Reporter {
    /// Progress on stderr, as a bar if stderr is a terminal.
    pub(crate) fn stderr() -> Self {
        let out = std::io::stderr();
        let terminal = out.is_terminal();
        Reporter::new(out, terminal, Instant::now())
    }
}

impl<W: Write> Reporter<W> {
    /// Progress on `out`, with a bar if `terminal`, timed from `t0`.
    pub(crate) fn new(out: W, terminal: bool, t0: Instant) -> Self {
        Reporter {
            out,
            terminal,
            t0,
            latest: None,
            printed: None,
            bar_drawn: false,
        }
    }

    /// A step of a sequence, timed from the start: a line of its own.
    pub(crate) fn step(&mut self, text: &str) {
        self.step_after(self.t0.elapsed(), text);
    }

    /// A step `elapsed` after its operation began, by the operation's own
    /// clock: a line of its own.
    pub(crate) fn step_after(&mut self, elapsed: Duration, text: &str) {
        if self.bar_drawn {
            let _ = write!(self.out, "\r\x1b[K");
            self.bar_drawn = false;
        }
        let _ = writeln!(self.out, "{}", step_line(elapsed, text));
        let _ = self.out.flush();
    }

    /// An operation's status and counts now.
    pub(crate) fn counts(&mut self, status: &str, c: Counts) {
        self.counts_at(Instant::now(), status, c);
    }

    fn counts_at(&mut self, now: Instant, status: &str, c: Counts) {
        let elapsed = now.saturating_duration_since(self.t0);
        if self.terminal {
            let _ = write!(self.out, "\r{}\x1b[K", bar_line(status, c, elapsed));
            let _ = self.out.flush();
            self.bar_drawn = true;
            return;
        }
        let text = counts_text(status, c);
        let changed = self.printed.as_ref().is_none_or(|(p, _)| *p != text);
        let due = self
            .printed
            .as_ref()
            .is_none_or(|(_, at)| now.saturating_duration_since(*at) >= MIN_GAP);
        self.latest = Some((text, elapsed));
        if changed && due {
            self.print_latest(now);
        }
    }

    /// Ends the progress: the bar's line, or the last counts not printed yet.
    pub(crate) fn finish(&mut self) {
        if self.bar_drawn {
            let _ = writeln!(self.out);
            self.bar_drawn = false;
        }
        let unprinted = match (&self.latest, &self.printed) {
            (Some((l, _)), Some((p, _))) => l != p,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if unprinted {
            self.print_latest(Instant::now());
        }
        let _ = self.out.flush();
    }

    fn print_latest(&mut self, now: Instant) {
        if let Some((text, elapsed)) = self.latest.take() {
            let _ = writeln!(self.out, "{}", step_line(elapsed, &text));
            self.printed = Some((text, now));
        }
    }
}

impl<W: Write> Drop for Reporter<W> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A plain progress line: `[  12.5s] text`.
fn step_line(elapsed: Duration, text: &str) -> String {
    format!("[{:>6.1}s] {text}", elapsed.as_secs_f64())
}

/// What a plain line says of an operation's counts: `2/5 done, 0 failed,
/// InProgress`, or the status alone when there is nothing to count.
fn counts_text(status: &str, c: Counts) -> String {
    if c == Counts::default() {
        status.to_owned()
    } else {
        format!("{}/{} done, {} failed, {status}", c.done, c.total, c.failed)
    }
}

/// The terminal's bar (drawn after a carriage return, so without one):
/// `[##########--------------] 2/5 done, 0 failed  InProgress  3 s`.
fn bar_line(status: &str, c: Counts, elapsed: Duration) -> String {
    let filled = c
        .done
        .saturating_add(c.failed)
        .saturating_mul(BAR_WIDTH)
        .checked_div(c.total)
        .unwrap_or(0)
        .min(BAR_WIDTH);
    let bar: String = (0..BAR_WIDTH)
        .map(|i| if i < filled { '#' } else { '-' })
        .collect();
    format!(
        "[{bar}] {}/{} done, {} failed  {status}  {} s",
        c.done,
        c.total,
        c.failed,
        elapsed.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(done: u64, failed: u64, total: u64) -> Counts {
        Counts {
            done,
            failed,
            total,
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn plain_lines() {
        assert_eq!(step_line(secs(0.34), "starting"), "[   0.3s] starting");
        assert_eq!(step_line(secs(12.5), "x"), "[  12.5s] x");
        assert_eq!(step_line(secs(123_456.0), "x"), "[123456.0s] x");
        assert_eq!(
            counts_text("InProgress", counts(2, 1, 5)),
            "2/5 done, 1 failed, InProgress"
        );
        assert_eq!(counts_text("InProgress", Counts::default()), "InProgress");
    }

    #[test]
    fn the_bar_fills_with_finished_items() {
        assert_eq!(
            bar_line("InProgress", counts(1, 1, 4), secs(3.7)),
            "[############------------] 1/4 done, 1 failed  InProgress  3 s"
        );
        assert_eq!(
            bar_line("InProgress", Counts::default(), secs(0.0)),
            "[------------------------] 0/0 done, 0 failed  InProgress  0 s"
        );
        // Counts from the server are not trusted to add up.
        let full = bar_line("Succeeded", counts(u64::MAX, 9, 3), secs(1.0));
        assert!(full.starts_with(&format!("[{}]", "#".repeat(24))), "{full}");
    }

    /// Feeds `(seconds, status, counts)` to a plain reporter and returns
    /// what it printed.
    fn plain(updates: &[(f64, &str, Counts)]) -> String {
        let mut out = Vec::new();
        let t0 = Instant::now();
        {
            let mut r = Reporter::new(&mut out, false, t0);
            for (at, status, c) in updates {
                r.counts_at(t0 + secs(*at), status, *c);
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn plain_progress_is_one_line_per_change() {
        let out = plain(&[
            (0.0, "InProgress", counts(0, 0, 3)),
            (0.5, "InProgress", counts(0, 0, 3)),
            (1.0, "InProgress", counts(0, 0, 3)),
            (2.0, "InProgress", counts(1, 0, 3)),
            (2.5, "InProgress", counts(1, 0, 3)),
            (4.0, "Succeeded", counts(3, 0, 3)),
        ]);
        assert_eq!(
            out,
            "[   0.0s] 0/3 done, 0 failed, InProgress\n\
             [   2.0s] 1/3 done, 0 failed, InProgress\n\
             [   4.0s] 3/3 done, 0 failed, Succeeded\n"
        );
        assert!(!out.contains('\r'));
    }

    #[test]
    fn plain_progress_is_at_most_a_line_a_second() {
        // Changes within a second of the last line wait for the next
        // update; the last one is printed when the reporter ends.
        let out = plain(&[
            (0.0, "InProgress", counts(0, 0, 4)),
            (0.3, "InProgress", counts(1, 0, 4)),
            (0.6, "InProgress", counts(2, 0, 4)),
            (1.2, "InProgress", counts(2, 0, 4)),
            (1.5, "InProgress", counts(3, 0, 4)),
            (1.8, "Failed", counts(3, 1, 4)),
        ]);
        assert_eq!(
            out,
            "[   0.0s] 0/4 done, 0 failed, InProgress\n\
             [   1.2s] 2/4 done, 0 failed, InProgress\n\
             [   1.8s] 3/4 done, 1 failed, Failed\n"
        );
    }

    #[test]
    fn steps_are_lines_on_a_terminal_too() {
        let mut out = Vec::new();
        let t0 = Instant::now();
        {
            let mut r = Reporter::new(&mut out, true, t0);
            r.counts_at(t0 + secs(1.0), "InProgress", counts(0, 0, 1));
            r.step_after(secs(1.5), "vm-1: booting");
            r.counts_at(t0 + secs(2.0), "Succeeded", counts(1, 0, 1));
        }
        let bar0 = format!("[{}] 0/1 done, 0 failed  InProgress  1 s", "-".repeat(24));
        let bar1 = format!("[{}] 1/1 done, 0 failed  Succeeded  2 s", "#".repeat(24));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("\r{bar0}\x1b[K\r\x1b[K[   1.5s] vm-1: booting\n\r{bar1}\x1b[K\n")
        );
    }
}
