//! The listening loop behind `vgt-capture`: binds the vhost-user socket, serves one front-end
//! connection at a time, shows a status line, and turns SIGINT/SIGTERM into a cleanly finished
//! capture file.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vgt_device::DeviceConfig;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::recorder::{RecordSink, Recorder};
use crate::session::{EndReason, Session, SessionConfig};
use crate::sink::NullSink;

/// When a record reaches the operating system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every command record (with the records before it) is in the file (copied into a shared
    /// mapping of it, or written with write(2) where it cannot be mapped) before the device runs
    /// the command; the records of what the device did are there before the guest is told.
    CrashSafe,
    /// Records are buffered in memory and written in batches by a writer thread.
    Buffered,
}

/// Command-line options of `vgt-capture`.
#[derive(Debug, Clone)]
pub struct Options {
    /// vhost-user socket path to listen on.
    pub socket: PathBuf,
    /// Capture file (numbered for later connections with `keep_listening`).
    pub output: PathBuf,
    /// Number of scanouts.
    pub scanouts: u32,
    /// Scanout size the device reports when QEMU does not answer GET_DISPLAY_INFO.
    pub size: (u32, u32),
    /// Sync policy.
    pub sync: SyncMode,
    /// Blob compression of the capture file (`--compression`).
    pub compression: vgt_format::file::Compression,
    /// False with `--no-record`: serve without writing a file.
    pub record: bool,
    /// No status line.
    pub quiet: bool,
    /// Serve further connections into new files after a disconnect.
    pub keep_listening: bool,
}

/// How the server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Disconnect (without keep-listening) or a signal; every file finished.
    Clean,
    /// The device crashed; the file was finished with the crash recorded.
    Crashed,
    /// The capture file could not be written.
    RecordFailed,
}

/// File name for connection `n` (0-based): `n == 0` is `base` itself; later connections insert
/// `-N` before the extension (`trace.vgt` → `trace-1.vgt`) or append `.N` when there is none.
pub fn output_path(base: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return base.to_path_buf();
    }
    match (base.file_stem(), base.extension()) {
        (Some(stem), Some(ext)) => {
            let mut name = stem.to_os_string();
            name.push(format!("-{n}."));
            name.push(ext);
            base.with_file_name(name)
        }
        _ => {
            let mut s = base.as_os_str().to_os_string();
            s.push(format!(".{n}"));
            PathBuf::from(s)
        }
    }
}

/// Opens the sink for one connection.
pub fn open_sink(opts: &Options, path: &Path) -> anyhow::Result<Box<dyn RecordSink>> {
    if !opts.record {
        return Ok(Box::new(NullSink::default()));
    }
    crate::sink::open_file_with(path, opts.sync, opts.compression)
        .with_context(|| format!("cannot create capture file {}", path.display()))
}

const TOKEN_LISTENER: u64 = 1;
const TOKEN_SIGNAL: u64 = 2;
const TOKEN_SESSION: u64 = 3;

fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            // A stale socket from an earlier run: nobody can be listening on it any more
            // once we bind, so replace it.
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        } else {
            bail!("{} exists and is not a socket", path.display());
        }
    }
    UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))
}

fn status_bar(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar
}

fn status_message(recorder: &Recorder, path: &Path) -> String {
    let mut s = recorder.stats();
    if recorder.is_finished() {
        // The writer is gone; the file's length includes the index it wrote last.
        s.file_bytes = std::fs::metadata(path).map_or(s.file_bytes, |m| m.len());
    }
    format!(
        "{}: {} commands, {} frames, {:.1} MB written, dedup {:.2}x{}",
        path.display(),
        s.commands,
        s.frames,
        s.file_bytes as f64 / 1e6,
        s.dedup_ratio(),
        if s.validation_errors > 0 {
            format!(", {} validation errors", s.validation_errors)
        } else {
            String::new()
        }
    )
}

/// Runs the server until a signal, a disconnect (without `keep_listening`) or a crash.
pub fn run(opts: &Options) -> anyhow::Result<Outcome> {
    let (sig_read, sig_write) = UnixStream::pair().context("signal pipe")?;
    sig_read.set_nonblocking(true).context("signal pipe")?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::low_level::pipe::register(sig, sig_write.try_clone().context("signal pipe")?)
            .context("cannot install signal handler")?;
    }
    let listener = bind(&opts.socket)?;
    let result = serve(opts, &listener, &sig_read);
    let _ = std::fs::remove_file(&opts.socket);
    result
}

fn serve(
    opts: &Options,
    listener: &UnixListener,
    sig_read: &UnixStream,
) -> anyhow::Result<Outcome> {
    let epoll = Epoll::new().context("epoll")?;
    epoll
        .ctl(
            ControlOperation::Add,
            listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_LISTENER),
        )
        .context("epoll")?;
    epoll
        .ctl(
            ControlOperation::Add,
            sig_read.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_SIGNAL),
        )
        .context("epoll")?;
    let config = SessionConfig {
        device: device_config(opts),
    };
    let bar = status_bar(opts.quiet);
    let mut events = vec![EpollEvent::default(); 4];
    let mut n = 0u32;
    loop {
        bar.set_message(format!(
            "waiting for a front-end on {}",
            opts.socket.display()
        ));
        // Wait for a connection or a signal.
        let mut accepted = None;
        while accepted.is_none() {
            let count = match epoll.wait(1000, &mut events) {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("epoll wait"),
            };
            bar.tick();
            for ev in &events[..count] {
                match ev.data() {
                    TOKEN_SIGNAL => {
                        bar.finish_and_clear();
                        return Ok(Outcome::Clean);
                    }
                    TOKEN_LISTENER => {
                        let (stream, _) = listener.accept().context("accept")?;
                        accepted = Some(stream);
                    }
                    _ => {}
                }
            }
        }
        let Some(stream) = accepted else { continue };
        let path = output_path(&opts.output, n);
        n += 1;
        let recorder = Arc::new(Recorder::new(open_sink(opts, &path)?));
        let session = Session::start(stream, recorder.clone(), &config)
            .with_context(|| format!("cannot start a session for {}", path.display()))?;
        let wake = session.signal().wake_fd().as_raw_fd();
        epoll
            .ctl(
                ControlOperation::Add,
                wake,
                EpollEvent::new(EventSet::IN, TOKEN_SESSION),
            )
            .context("epoll")?;
        let reason = 'session: loop {
            let count = match epoll.wait(1000, &mut events) {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("epoll wait"),
            };
            bar.set_message(status_message(&recorder, &path));
            bar.tick();
            if opts.sync == SyncMode::Buffered {
                // Bound what a crash can lose to about a second of records.
                if let Err(e) = recorder.hand_over() {
                    eprintln!("vgt-capture: error: flushing {}: {e}", path.display());
                }
            }
            for ev in &events[..count] {
                match ev.data() {
                    TOKEN_SIGNAL => break 'session EndReason::Signal,
                    TOKEN_SESSION => {
                        if let Some(r) = session.signal().end_reason() {
                            break 'session r;
                        }
                    }
                    _ => {}
                }
            }
        };
        let _ = epoll.ctl(ControlOperation::Delete, wake, EpollEvent::default());
        let ended = session.end(reason);
        bar.finish_and_clear();
        ended.with_context(|| format!("cannot finish capture file {}", path.display()))?;
        let summary = status_message(&recorder, &path);
        if !opts.quiet {
            eprintln!("vgt-capture: finished {summary}");
        }
        match reason {
            EndReason::Signal => return Ok(Outcome::Clean),
            EndReason::Crash => return Ok(Outcome::Crashed),
            EndReason::RecordFailed => return Ok(Outcome::RecordFailed),
            EndReason::Disconnect if !opts.keep_listening => return Ok(Outcome::Clean),
            EndReason::Disconnect => {
                // Drain signal bytes that may have raced with the disconnect? No: a pending
                // signal stays readable and stops the loop at the next wait.
            }
        }
    }
}

/// The device configuration for the options.
pub fn device_config(opts: &Options) -> DeviceConfig {
    DeviceConfig {
        scanouts: vec![opts.size; opts.scanouts as usize],
        ..DeviceConfig::default()
    }
}
