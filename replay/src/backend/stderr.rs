//! What a backend started with `--backend-cmd` says on its standard error (and output).
//!
//! The backend's stderr is a pipe to replay. A thread copies every byte to replay's own stderr
//! as it comes (the user sees the backend's output as without replay) and keeps the lines the
//! backend wrote since it last answered a command. When the backend then fails (dies, stops
//! answering, exits before listening), the failure quotes the last of those lines: the
//! assertion, panic message or usage error that says why, in the one-line divergence and in
//! `--json`.
//!
//! The backend's stdout is a pipe too, copied to replay's stderr ([`forward`]): replay's stdout
//! is its report (`--json` is one document), and a backend may write there (glib sends
//! `g_message` and `g_info` to stdout).
//!
//! Lines are attributed by when replay read them: a warning the backend writes just before an
//! answer may be read just after it, and then counts towards the next command.

use std::io::{Read, Write};
use std::process::{ChildStderr, ChildStdout};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vgt_format::words::LastWords;

/// How many lines a failure quotes.
pub(crate) const QUOTE: usize = 3;

/// Longest line kept, in bytes; the rest of a longer line is dropped.
pub(crate) const MAX_LINE: usize = 1024;

/// How long a failure waits for the pipe's end after the process exited (its last bytes may
/// still be in the pipe), and for more bytes from a process still running.
const EXITED_WAIT: Duration = Duration::from_millis(500);
const RUNNING_WAIT: Duration = Duration::from_millis(50);

/// What the backend wrote since its last answer: line numbers count non-blank lines from 1.
#[derive(Debug, Clone)]
struct Tail {
    /// The lines worth quoting ([`LastWords`]).
    words: LastWords<String>,
    /// The current line, without its newline (at most [`MAX_LINE`] bytes).
    partial: Vec<u8>,
    /// Bytes of the current line beyond [`MAX_LINE`] were dropped.
    cut: bool,
    /// The pipe reached its end (the backend and everything it started closed it).
    eof: bool,
    /// The backend has answered a command (so the lines are those since its last answer).
    answered: bool,
}

impl Default for Tail {
    fn default() -> Self {
        Tail {
            words: LastWords::new(QUOTE),
            partial: Vec::new(),
            cut: false,
            eof: false,
            answered: false,
        }
    }
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.extend(&rest[..nl]);
            self.end_line();
            rest = &rest[nl + 1..];
        }
        self.extend(rest);
    }

    fn extend(&mut self, bytes: &[u8]) {
        let room = MAX_LINE - self.partial.len();
        if bytes.len() > room {
            self.cut = true;
        }
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn end_line(&mut self) {
        let mut line = std::mem::take(&mut self.partial);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let mut text = String::from_utf8_lossy(&line).trim().to_owned();
        if std::mem::take(&mut self.cut) {
            text.push_str("...");
        }
        self.words.push(&text, text.clone());
    }

    /// The backend answered: the lines before are no longer news (a partial line goes on).
    fn forget(&mut self) {
        self.words.forget();
        self.answered = true;
    }

    /// [`LastWords::quote`] of the lines since the last answer; a partial line counts as the
    /// last line.
    fn quote(&self) -> Option<String> {
        let mut t = self.clone();
        if !t.partial.is_empty() {
            t.end_line();
        }
        t.words.quote(t.answered.then_some("its last answer"))
    }
}

/// The stderr of a started backend: copied to replay's stderr by a thread, its latest lines
/// kept for [`StderrTail::last_words`].
#[derive(Debug, Clone)]
pub(crate) struct StderrTail {
    shared: Arc<(Mutex<Tail>, Condvar)>,
}

impl StderrTail {
    /// Starts the thread that reads `pipe` until its end.
    pub(crate) fn spawn(mut pipe: ChildStderr) -> std::io::Result<StderrTail> {
        let tail = StderrTail {
            shared: Arc::new((Mutex::new(Tail::default()), Condvar::new())),
        };
        let shared = Arc::clone(&tail.shared);
        std::thread::Builder::new()
            .name("backend-stderr".to_owned())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    let n = match pipe.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    };
                    // Shown first: replay's own stderr going away must not stop the keeping.
                    let _ = std::io::stderr().write_all(&buf[..n]);
                    lock(&shared.0).push(&buf[..n]);
                    shared.1.notify_all();
                }
                let mut t = lock(&shared.0);
                // A backend that died mid-line said its last bytes.
                if !t.partial.is_empty() {
                    t.end_line();
                }
                t.eof = true;
                drop(t);
                shared.1.notify_all();
            })?;
        Ok(tail)
    }

    /// The backend answered a command: what it said before is no longer news.
    pub(crate) fn answered(&self) {
        lock(&self.shared.0).forget();
    }

    /// The lines the backend wrote since its last answer, quoted for a failure message (see
    /// [`Tail::quote`]); None when it said nothing. Waits a moment for bytes still in the pipe:
    /// up to [`EXITED_WAIT`] for its end when the process `exited`, [`RUNNING_WAIT`] otherwise.
    pub(crate) fn last_words(&self, exited: bool) -> Option<String> {
        let (wait, until_eof) = if exited {
            (EXITED_WAIT, true)
        } else {
            (RUNNING_WAIT, false)
        };
        let deadline = Instant::now() + wait;
        let mut t = lock(&self.shared.0);
        loop {
            let now = Instant::now();
            if (until_eof && t.eof) || now >= deadline {
                break;
            }
            t = match self.shared.1.wait_timeout(t, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        t.quote()
    }
}

/// Starts a thread that copies a started backend's stdout to replay's stderr until its end.
pub(crate) fn forward(mut pipe: ChildStdout) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("backend-stdout".to_owned())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let _ = std::io::stderr().write_all(&buf[..n]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        })
        .map(drop)
}

fn lock(m: &Mutex<Tail>) -> MutexGuard<'_, Tail> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(bytes: &[&[u8]]) -> Tail {
        let mut t = Tail::default();
        for b in bytes {
            t.push(b);
        }
        t
    }

    #[test]
    fn lines_split_anywhere_are_joined_and_a_partial_last_line_is_quoted() {
        let t = tail(&[
            b"thread 'v' pan",
            b"icked at src/dev",
            b"ice.rs:261\r\nnot yet impl",
        ]);
        assert_eq!(
            t.quote().unwrap(),
            r#"its stderr: "thread 'v' panicked at src/device.rs:261" / "not yet impl""#
        );
    }

    #[test]
    fn where_the_pipe_splits_the_bytes_changes_nothing() {
        let text: &[u8] =
            b"[INFO] up\r\n\nthread 'w' panicked at a.rs:1:2:\nboom \xff\n   0: x::error\nnote: y";
        let whole = tail(&[text]).quote();
        for i in 0..=text.len() {
            for j in i..=text.len() {
                let t = tail(&[&text[..i], &text[i..j], &text[j..]]);
                assert_eq!(t.quote(), whole, "split at {i}, {j}");
            }
        }
        assert_eq!(
            whole.unwrap(),
            "its stderr (5 lines), lines 2-4: \"thread 'w' panicked at a.rs:1:2:\" / \"boom \u{fffd}\" / \"0: x::error\""
        );
    }

    #[test]
    fn a_panic_under_a_backtrace_is_quoted_from_its_first_line() {
        // What vhost-device-gpu 0.2.0 writes with RUST_BACKTRACE=1: the frames name functions
        // with "error" in them, and the last lines say nothing.
        let t = tail(&[
            b"[INFO] listening\n",
            b"thread 'vring_worker' (7) panicked at src/device.rs:261:17:\n",
            b"not yet implemented\nstack backtrace:\n",
            b"   0: std::panicking::handle_error\n             at /rustc/x/panicking.rs:1:2\n",
            b"note: Some details are omitted, run with `RUST_BACKTRACE=full`\n",
        ]);
        assert_eq!(
            t.quote().unwrap(),
            r#"its stderr (7 lines), lines 2-4: "thread 'vring_worker' (7) panicked at src/device.rs:261:17:" / "not yet implemented" / "stack backtrace:""#
        );
    }

    #[test]
    fn without_a_telling_line_the_last_lines_are_quoted_with_their_numbers() {
        let mut t = Tail::default();
        for i in 1..=40 {
            t.push(format!("line {i}\n\n").as_bytes());
        }
        assert_eq!(
            t.quote().unwrap(),
            r#"its stderr (40 lines), lines 38-40: "line 38" / "line 39" / "line 40""#
        );
        t.forget();
        t.push(b"a\nb\nc\nd\n");
        assert_eq!(
            t.quote().unwrap(),
            r#"its stderr since its last answer (4 lines), lines 2-4: "b" / "c" / "d""#
        );
        t.forget();
        t.push(b"x\ny\n(process:1): GLib-CRITICAL **: assertion 'g->sock_fd == -1' failed\n");
        assert_eq!(
            t.quote().unwrap(),
            r#"its stderr since its last answer: "x" / "y" / "(process:1): GLib-CRITICAL **: assertion 'g->sock_fd == -1' failed""#
        );
        t.push(b"z\n");
        assert_eq!(
            t.quote().unwrap(),
            r#"its stderr since its last answer (4 lines), lines 2-4: "y" / "(process:1): GLib-CRITICAL **: assertion 'g->sock_fd == -1' failed" / "z""#
        );
        t.push(b"later error\nw\n");
        assert!(t.quote().unwrap().contains("(6 lines), lines 3-5:"));
    }

    #[test]
    fn an_answer_forgets_what_came_before_and_silence_quotes_nothing() {
        let mut t = tail(&[b"old warning\n", b"half a"]);
        t.forget();
        assert_eq!(
            t.quote().unwrap(),
            r#"its stderr since its last answer: "half a""#
        );
        t.push(b" line\n");
        t.forget();
        assert_eq!(t.quote(), None);
        t.push(b"  \n\t\n");
        assert_eq!(t.quote(), None);
    }

    #[test]
    fn long_lines_and_invalid_utf8_are_cut_and_replaced() {
        let mut long = vec![b'x'; MAX_LINE * 3];
        long.push(b'\n');
        let t = tail(&[&long, b"\xff\xfeok\n"]);
        let (_, lines) = t.words.selection();
        assert_eq!(lines[0].len(), MAX_LINE + 3);
        assert!(lines[0].ends_with("..."));
        assert_eq!(lines[1], "\u{fffd}\u{fffd}ok");
        let q = t.quote().unwrap();
        // Each quoted line is at most QUOTE_CHARS characters and an ellipsis.
        assert!(
            q.contains(&format!(
                "\"{}...\"",
                "x".repeat(vgt_format::words::QUOTE_CHARS)
            )),
            "{q}"
        );
    }

    #[test]
    fn the_reader_copies_the_pipe_and_last_words_wait_for_its_end() {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("printf 'starting\\n' >&2; sleep 0.2; printf 'assertion failed' >&2")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let t = StderrTail::spawn(child.stderr.take().unwrap()).unwrap();
        child.wait().unwrap();
        assert_eq!(
            t.last_words(true).unwrap(),
            r#"its stderr: "starting" / "assertion failed""#
        );
        t.answered();
        assert_eq!(t.last_words(true), None);
    }
}
