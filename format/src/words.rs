//! Which of a backend's output lines say why it failed.
//!
//! A backend that dies or hangs says why on its stderr, but not in its last lines: a Rust panic
//! under `RUST_BACKTRACE=1` ends with a dozen frames and a note, a glib assertion may be
//! followed by unrelated warnings. [`LastWords`] follows the lines a backend wrote since it last
//! answered a command and picks the ones to show: `show` lines from the first *telling* line
//! ([`is_telling`]: a panic's first line, an assertion, an error) on, or the last `show` when
//! fewer follow it or none tells (so the telling line is always among them). vgt-replay quotes them when the backend it replays on fails,
//! `vgt-inspect info` shows them for a proxy capture (from its `BackendStderr` records).

use std::collections::VecDeque;

/// Words that mark a line saying what went wrong (matched without regard to case): a Rust
/// panic's first line, a glib assertion or critical, an error or usage message.
pub const TELLING_WORDS: [&str; 9] = [
    "panicked at",
    "assert",
    "critical",
    "error",
    "fatal",
    "abort",
    "fault",
    "failed",
    "unknown option",
];

/// True for a line that says what went wrong (one of [`TELLING_WORDS`]); a backtrace's frame
/// lines ("  5: path::to::fn", "at src/x.rs:1") never do, whatever their function names say.
pub fn is_telling(line: &str) -> bool {
    let t = line.trim_start();
    let frame = t.starts_with("at ")
        || t.split_once(':')
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let lower = t.to_ascii_lowercase();
    !frame && TELLING_WORDS.iter().any(|w| lower.contains(w))
}

/// The lines a backend wrote since its last answer, reduced to the `show` worth showing. Blank
/// lines are not counted; lines are numbered from 1 since the last [`LastWords::forget`].
/// `T` is what a line is kept as (its text, or its record id and text).
#[derive(Debug, Clone)]
pub struct LastWords<T> {
    show: usize,
    count: u64,
    first_telling: Option<(u64, Vec<T>)>,
    last: VecDeque<T>,
}

impl<T: Clone> LastWords<T> {
    /// Keeps enough to show `show` lines (at least 1).
    pub fn new(show: usize) -> Self {
        LastWords {
            show: show.max(1),
            count: 0,
            first_telling: None,
            last: VecDeque::new(),
        }
    }

    /// One line, kept as `item`; `text` is what it says. Blank lines are ignored.
    pub fn push(&mut self, text: &str, item: T) {
        if text.trim().is_empty() {
            return;
        }
        self.count += 1;
        match &mut self.first_telling {
            Some((_, group)) if group.len() < self.show => group.push(item.clone()),
            Some(_) => {}
            None if is_telling(text) => self.first_telling = Some((self.count, vec![item.clone()])),
            None => {}
        }
        self.last.push_back(item);
        if self.last.len() > self.show {
            self.last.pop_front();
        }
    }

    /// The backend answered: what it said before is no longer news.
    pub fn forget(&mut self) {
        self.count = 0;
        self.first_telling = None;
        self.last.clear();
    }

    /// Lines (not blank) since the last [`LastWords::forget`].
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The lines to show and the number of the first: the first telling line and the
    /// `show - 1` after it when there are that many, else the last `show` (all of them when
    /// there are at most `show`). Empty when nothing was said.
    pub fn selection(&self) -> (u64, Vec<T>) {
        match &self.first_telling {
            Some((n, group)) if group.len() == self.show => (*n, group.clone()),
            _ => (
                self.count + 1 - self.last.len() as u64,
                self.last.iter().cloned().collect(),
            ),
        }
    }

    /// True when [`LastWords::selection`] leaves lines out.
    pub fn is_partial(&self) -> bool {
        self.count > self.show as u64
    }
}

/// Longest quote of one line in [`LastWords::quote`], in characters.
pub const QUOTE_CHARS: usize = 240;

impl LastWords<String> {
    /// The selection for a one-line message: `its stderr since {since}: "a" / "b"` (`its
    /// stderr: ...` without `since`), saying which lines when some are left out
    /// (`its stderr (11 lines), lines 1-3: ...`), each line cut to [`QUOTE_CHARS`] characters
    /// and quoted as a Rust string literal (control characters escaped). None when nothing was
    /// said.
    pub fn quote(&self, since: Option<&str>) -> Option<String> {
        let (first, shown) = self.selection();
        if shown.is_empty() {
            return None;
        }
        let since = since.map_or_else(String::new, |s| format!(" since {s}"));
        let last = first + shown.len() as u64 - 1;
        let which = match (self.is_partial(), first == last) {
            (false, _) => String::new(),
            (true, true) => format!(" ({} lines), line {first}", self.count),
            (true, false) => format!(" ({} lines), lines {first}-{last}", self.count),
        };
        let quoted: Vec<String> = shown.iter().map(|l| format!("{:?}", clip(l))).collect();
        Some(format!("its stderr{since}{which}: {}", quoted.join(" / ")))
    }
}

/// `line` cut to [`QUOTE_CHARS`] characters.
fn clip(line: &str) -> String {
    match line.char_indices().nth(QUOTE_CHARS) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(lines: &[&str], show: usize) -> LastWords<String> {
        let mut w = LastWords::new(show);
        for l in lines {
            w.push(l, (*l).to_owned());
        }
        w
    }

    #[test]
    fn few_lines_are_all_shown_and_blank_ones_not_counted() {
        let w = words(&["a", " ", "", "error: b"], 3);
        assert_eq!(w.count(), 2);
        assert_eq!(
            w.selection(),
            (1, vec!["a".to_owned(), "error: b".to_owned()])
        );
        assert!(!w.is_partial());
        let w = words(&[], 3);
        assert_eq!(w.selection(), (1, vec![]));
    }

    #[test]
    fn a_panic_under_a_backtrace_is_shown_from_its_first_line() {
        let w = words(
            &[
                "[INFO] listening",
                "thread 'vring_worker' panicked at src/device.rs:261:17:",
                "virtio_gpu: GpuCommand::ResourceCreateBlob unimplemented",
                "stack backtrace:",
                "   0: vhost_user_backend::handle_error",
                "             at src/error.rs:1:2",
                "note: Some details are omitted",
            ],
            3,
        );
        let (first, shown) = w.selection();
        assert_eq!(first, 2);
        assert_eq!(
            shown[1],
            "virtio_gpu: GpuCommand::ResourceCreateBlob unimplemented"
        );
        assert_eq!(shown.len(), 3);
        assert!(w.is_partial());
    }

    #[test]
    fn a_telling_line_near_the_end_is_shown_with_the_lines_before_it() {
        let w = words(&["1", "2", "3", "4", "assertion failed", "5"], 3);
        assert_eq!(
            w.selection(),
            (
                4,
                vec![
                    "4".to_owned(),
                    "assertion failed".to_owned(),
                    "5".to_owned()
                ]
            )
        );
        let w = words(&["1", "error one", "2", "3", "error two", "4"], 2);
        assert_eq!(
            w.selection(),
            (2, vec!["error one".to_owned(), "2".to_owned()])
        );
    }

    #[test]
    fn without_a_telling_line_the_last_are_shown_and_forget_starts_over() {
        let mut w = words(&["1", "2", "3", "4", "5"], 2);
        assert_eq!(w.selection(), (4, vec!["4".to_owned(), "5".to_owned()]));
        w.forget();
        assert_eq!(w.count(), 0);
        w.push("Option parsing failed: Unknown option --x", "x".to_owned());
        assert_eq!(w.selection(), (1, vec!["x".to_owned()]));
    }

    #[test]
    fn a_quote_says_which_lines_and_escapes_them() {
        let w = words(&["a", "b\u{1b}[0m"], 3);
        assert_eq!(w.quote(None).unwrap(), r#"its stderr: "a" / "b\u{1b}[0m""#);
        let w = words(&["1", "2", "3", "4"], 1);
        assert_eq!(
            w.quote(Some("its last answer")).unwrap(),
            r#"its stderr since its last answer (4 lines), line 4: "4""#
        );
        let long = "é".repeat(QUOTE_CHARS + 5);
        let w = words(&[&long], 1);
        assert_eq!(
            w.quote(None).unwrap(),
            format!("its stderr: \"{}...\"", "é".repeat(QUOTE_CHARS))
        );
        assert_eq!(words(&[" "], 3).quote(Some("x")), None);
    }

    #[test]
    fn backtrace_frames_never_tell_but_messages_do() {
        assert!(!is_telling("   5: vhost_user_backend::handle_error"));
        assert!(!is_telling("             at src/error.rs:10:5"));
        assert!(is_telling("Option parsing failed: Unknown option --x"));
        assert!(is_telling("Error: Os { code: 2 }"));
        assert!(is_telling(
            "(process:1): GLib-CRITICAL **: assertion 'g->sock_fd == -1' failed"
        ));
        assert!(!is_telling("[INFO] listening on gpu.sock"));
    }
}
