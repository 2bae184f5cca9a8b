//! What a backend started with `--backend-cmd` writes to its standard output and error.
//!
//! The backend's stdout and stderr are pipes to the proxy. Every byte read is written on to the
//! proxy's own stdout or stderr at once (the user sees the backend's output as without the
//! proxy), and every line goes into the capture as a `BackendStdout` / `BackendStderr`
//! lifecycle record naming the last command taken from the guest by then. So a capture of a
//! crash holds the backend's last words (an assertion, a panic message) next to the commands
//! that led to them.
//!
//! Lines are cut at a newline, at [`MAX_LINE`] bytes, or when a partial line has seen no more
//! bytes for [`PARTIAL_WAIT`] (a backend that writes one line in several writes, as Rust's
//! unbuffered stderr does, still gives one record; one that dies mid-line still gives its
//! last bytes). Output that comes before the capture file exists (before QEMU connects) is
//! kept, up to [`PENDING_MAX`] bytes, and recorded first when it does.
//!
//! The stderr lines since the backend's last control-queue answer are also kept as
//! [`vgt_format::words::LastWords`], so the crash summary and a stall warning can quote what the
//! backend said about it ([`BackendOutput::last_words`]).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::Child;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vgt_format::record::{LifecycleKind, RecordId};
use vgt_format::words::LastWords;

use crate::recorder::Recorder;

/// Longest line recorded as one record; longer lines become several.
pub const MAX_LINE: usize = 4096;

/// How long a partial line waits for the rest before it is recorded as it is.
pub const PARTIAL_WAIT: Duration = Duration::from_millis(50);

/// Output kept before the capture file exists (the oldest lines go first beyond it).
pub const PENDING_MAX: usize = 64 * 1024;

/// Splits a byte stream into lines: newline-terminated, `\r\n` and `\n` removed, cut at
/// [`MAX_LINE`], invalid UTF-8 replaced by U+FFFD.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Adds `bytes` and returns the lines they complete.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        while !bytes.is_empty() {
            let room = MAX_LINE - self.partial.len();
            let take = bytes.len().min(room);
            match bytes[..take].iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    self.partial.extend_from_slice(&bytes[..nl]);
                    lines.push(self.take());
                    bytes = &bytes[nl + 1..];
                }
                None => {
                    self.partial.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.partial.len() == MAX_LINE {
                        lines.push(self.take());
                    }
                }
            }
        }
        lines
    }

    /// True when bytes without a newline are waiting.
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    /// The partial line as it is (None when there is none).
    pub fn flush(&mut self) -> Option<String> {
        self.has_partial().then(|| self.take())
    }

    fn take(&mut self) -> String {
        let mut line = std::mem::take(&mut self.partial);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8_lossy(&line).into_owned()
    }
}

/// How many stderr lines a crash summary or stall warning quotes.
pub const QUOTE: usize = 3;

/// (the last command taken, the last command the backend answered on the control queue), from
/// the proxy's state.
pub type Context = Box<dyn Fn() -> (Option<RecordId>, Option<RecordId>) + Send + Sync>;

/// Where lines go once the capture exists, and what they wait in until then.
struct Sink {
    recorder: Option<Arc<Recorder>>,
    /// For each line's `command`, and for what counts as since the last answer.
    context: Option<Context>,
    pending: VecDeque<(LifecycleKind, String)>,
    pending_bytes: usize,
    dropped: u64,
    /// Stderr lines since the backend's last answer (`answer`).
    words: LastWords<String>,
    answer: Option<RecordId>,
}

impl Default for Sink {
    fn default() -> Self {
        Sink {
            recorder: None,
            context: None,
            pending: VecDeque::new(),
            pending_bytes: 0,
            dropped: 0,
            words: LastWords::new(QUOTE),
            answer: None,
        }
    }
}

impl Sink {
    /// The backend's last answer is now `answer`: a newer one starts the words over.
    fn answered(&mut self, answer: Option<RecordId>) {
        if answer != self.answer {
            self.words.forget();
            self.answer = answer;
        }
    }

    fn line(&mut self, kind: LifecycleKind, line: String) {
        let (command, answer) = self.context.as_ref().map_or((None, None), |c| c());
        if kind == LifecycleKind::BackendStderr {
            self.answered(answer);
            self.words.push(&line, line.clone());
        }
        match &self.recorder {
            Some(r) => {
                // After the file is finished nothing more can go in; the line was shown.
                let _ = r.lifecycle(kind, None, command, line);
            }
            None => {
                self.pending_bytes += line.len();
                self.pending.push_back((kind, line));
                while self.pending_bytes > PENDING_MAX {
                    let Some((_, old)) = self.pending.pop_front() else {
                        break;
                    };
                    self.pending_bytes -= old.len();
                    self.dropped += 1;
                }
            }
        }
    }
}

/// One of the two pipes.
struct Stream {
    kind: LifecycleKind,
    pipe: File,
    state: Mutex<StreamState>,
}

#[derive(Default)]
struct StreamState {
    split: LineSplitter,
    eof: bool,
}

struct Inner {
    sink: Mutex<Sink>,
    streams: Vec<Stream>,
}

impl Inner {
    fn sink(&self) -> MutexGuard<'_, Sink> {
        self.sink.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Stream {
    fn state(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The backend's stdout and stderr, shown and recorded (module documentation).
#[derive(Clone)]
pub struct BackendOutput {
    inner: Arc<Inner>,
}

impl BackendOutput {
    /// Takes `child`'s piped stdout and stderr (those not piped are left alone) and starts a
    /// thread per pipe.
    pub fn start(child: &mut Child) -> BackendOutput {
        let mut streams = Vec::new();
        if let Some(out) = child.stdout.take() {
            streams.push(Stream {
                kind: LifecycleKind::BackendStdout,
                pipe: File::from(std::os::fd::OwnedFd::from(out)),
                state: Mutex::default(),
            });
        }
        if let Some(err) = child.stderr.take() {
            streams.push(Stream {
                kind: LifecycleKind::BackendStderr,
                pipe: File::from(std::os::fd::OwnedFd::from(err)),
                state: Mutex::default(),
            });
        }
        let inner = Arc::new(Inner {
            sink: Mutex::default(),
            streams,
        });
        for i in 0..inner.streams.len() {
            let inner = inner.clone();
            let spawned = std::thread::Builder::new()
                .name("vgt-proxy-output".to_owned())
                .spawn(move || pump(&inner, i));
            if spawned.is_err() {
                // Without its thread the pipe would fill and block the backend: say so once.
                eprintln!("vgt-capture proxy: cannot start a thread for the backend's output");
            }
        }
        BackendOutput { inner }
    }

    /// From now on lines go into `recorder`; the ones kept so far go first (with a note when
    /// some were dropped). `context` names the last command taken.
    pub fn attach(&self, recorder: Arc<Recorder>, context: Context) {
        let mut sink = self.inner.sink();
        if sink.dropped > 0 {
            let _ = recorder.lifecycle(
                LifecycleKind::Error,
                None,
                None,
                format!(
                    "{} earlier line(s) of the backend's output are not recorded: more than {} KiB came before QEMU connected",
                    sink.dropped,
                    PENDING_MAX / 1024
                ),
            );
        }
        for (kind, line) in std::mem::take(&mut sink.pending) {
            let _ = recorder.lifecycle(kind, None, None, line);
        }
        sink.pending_bytes = 0;
        sink.recorder = Some(recorder);
        sink.context = Some(context);
    }

    /// What the backend wrote on stderr since its last answer (`answer`, the last command it
    /// completed on the control queue), quoted for a one-line message ([`LastWords::quote`]);
    /// None when it said nothing since. Call [`BackendOutput::drain`] first for the lines still
    /// in the pipe.
    pub fn last_words(&self, answer: Option<RecordId>) -> Option<String> {
        let mut sink = self.inner.sink();
        sink.answered(answer);
        sink.words
            .quote(answer.map(|_| "its last control-queue answer"))
    }

    /// Waits (at most `max`) until everything the backend has written so far is shown and
    /// recorded: each pipe closed, or empty with its partial line recorded. Called before the
    /// crash records and before the file is finished, so the backend's last words are in it.
    pub fn drain(&self, max: Duration) {
        let start = Instant::now();
        loop {
            let mut done = true;
            for s in &self.inner.streams {
                let mut st = s.state();
                if st.eof {
                    continue;
                }
                // The pump reads only with this lock held: an empty pipe now means every byte
                // written so far went through `push` (the partial line is all that is left).
                if unread(&s.pipe) == 0 {
                    if let Some(line) = st.split.flush() {
                        self.inner.sink().line(s.kind, line);
                    }
                } else {
                    done = false;
                }
            }
            if done || start.elapsed() >= max {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Bytes waiting in a pipe (FIONREAD); 0 when it cannot be asked.
fn unread(pipe: &File) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at `n`.
    let rc = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc == 0 { n.max(0) as usize } else { 0 }
}

/// Waits for the pipe to be readable (or hung up) for at most `timeout` (None: for ever).
fn wait_readable(pipe: &File, timeout: Option<Duration>) -> bool {
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    let mut pfd = libc::pollfd {
        fd: pipe.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one pollfd, owned here, for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc >= 0 {
            return rc > 0;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // Let the read report it.
            return true;
        }
    }
}

/// One pipe's thread: shows and records what comes until the pipe closes.
fn pump(inner: &Inner, i: usize) {
    let Some(s) = inner.streams.get(i) else {
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let partial = s.state().split.has_partial();
        let ready = wait_readable(&s.pipe, partial.then_some(PARTIAL_WAIT));
        let mut st = s.state();
        if !ready {
            // A partial line that saw nothing more for PARTIAL_WAIT.
            if let Some(line) = st.split.flush() {
                inner.sink().line(s.kind, line);
            }
            continue;
        }
        let n = loop {
            match (&s.pipe).read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break 0,
                Ok(n) => break n,
            }
        };
        if n == 0 {
            if let Some(line) = st.split.flush() {
                inner.sink().line(s.kind, line);
            }
            st.eof = true;
            return;
        }
        let bytes = &buf[..n];
        // Shown first, as the backend wrote it.
        let _ = match s.kind {
            LifecycleKind::BackendStdout => std::io::stdout().lock().write_all(bytes),
            _ => std::io::stderr().lock().write_all(bytes),
        };
        let lines = st.split.push(bytes);
        if !lines.is_empty() {
            let mut sink = inner.sink();
            for line in lines {
                sink.line(s.kind, line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_join_across_writes_and_split_at_newlines() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"thread 'main' panicked at ").is_empty());
        assert!(s.has_partial());
        assert_eq!(
            s.push(b"src/main.rs:2:5:\r\nboom\nnext"),
            ["thread 'main' panicked at src/main.rs:2:5:", "boom"]
        );
        assert_eq!(s.flush().as_deref(), Some("next"));
        assert_eq!(s.flush(), None);
        assert_eq!(s.push(b"\n\n"), ["", ""]);
    }

    #[test]
    fn long_lines_are_cut_and_bad_utf8_replaced() {
        let mut s = LineSplitter::default();
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let lines = s.push(&long);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() == MAX_LINE));
        assert_eq!(s.flush().map(|l| l.len()), Some(10));
        assert_eq!(s.push(b"a\xffb\n"), ["a\u{fffd}b"]);
    }

    #[test]
    fn the_words_quoted_are_those_since_the_backends_last_answer() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let answer = Arc::new(AtomicU64::new(0));
        let mut sink = Sink::default();
        let a = answer.clone();
        sink.context = Some(Box::new(move || {
            let n = a.load(Ordering::Relaxed);
            (None, (n > 0).then_some(n))
        }));
        sink.line(LifecycleKind::BackendStderr, "before any answer".to_owned());
        answer.store(7, Ordering::Relaxed);
        sink.line(
            LifecycleKind::BackendStdout,
            "stdout is not quoted".to_owned(),
        );
        sink.line(LifecycleKind::BackendStderr, "assertion failed".to_owned());
        sink.answered(Some(7));
        assert_eq!(
            sink.words.quote(Some("its last answer")).unwrap(),
            r#"its stderr since its last answer: "assertion failed""#
        );
        // A later answer: nothing said since.
        sink.answered(Some(9));
        assert_eq!(sink.words.quote(Some("its last answer")), None);
    }

    #[test]
    fn output_before_the_capture_is_kept_within_its_bound() {
        let mut sink = Sink::default();
        let line = "y".repeat(1000);
        for _ in 0..100 {
            sink.line(LifecycleKind::BackendStderr, line.clone());
        }
        assert_eq!(sink.pending.len(), PENDING_MAX / 1000);
        assert_eq!(sink.dropped, 100 - (PENDING_MAX / 1000) as u64);
        assert!(sink.pending_bytes <= PENDING_MAX);
    }
}
