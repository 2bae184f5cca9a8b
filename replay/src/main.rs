//! `vgt-replay`: re-execute a capture through vgt-device and verify it (thin CLI over the
//! library).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vgt_format::CaptureReader;
use vgt_format::record::RecordId;
use vgt_replay::backend::{BackendOptions, BackendSpec, DEFAULT_BACKEND_TIMEOUT};
use vgt_replay::{Divergence, ReplayObserver, ReplayOptions, Replayer, Timing, Unsupported};

/// Replay a vgt capture through vgt-device (rutabaga_gfx 2D), or through a real vhost-user GPU
/// backend binary, and compare every response and frame with the recording.
///
/// Exit status: 0 identical, 1 diverged (or commands this renderer cannot replay),
/// 2 unreadable input or bad arguments.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The capture file.
    file: PathBuf,
    /// Report every divergence instead of stopping at the first.
    #[arg(long)]
    keep_going: bool,
    /// Verify only commands with record numbers A..B (A inclusive, B exclusive); commands
    /// before A are executed silently to rebuild the state, replay stops before B.
    #[arg(long, value_name = "A..B", value_parser = parse_range, conflicts_with = "until")]
    range: Option<(RecordId, Option<RecordId>)>,
    /// Replay up to and including the command at record N, then stop.
    #[arg(long, value_name = "N")]
    until: Option<RecordId>,
    /// Write every replayed frame as PNG into DIR (frame-RECORD-sSCANOUT.png).
    #[arg(long, value_name = "DIR")]
    frames_dir: Option<PathBuf>,
    /// Pacing: asap, original (recorded timestamps) or xN (N times the recorded speed).
    #[arg(long, default_value = "asap", value_parser = clap::value_parser!(Timing))]
    timing: Timing,
    /// Replay N times (later loops are also checked against the first: determinism).
    #[arg(long = "loop", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    loops: u32,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Replay against the vhost-user GPU backend started by this shell command (every `%s`
    /// becomes the socket path it must listen on), e.g.
    /// '/usr/lib/qemu/vhost-user-gpu --socket-path %s'. Started anew for every loop.
    #[arg(long, value_name = "CMD", conflicts_with = "backend")]
    backend_cmd: Option<String>,
    /// Replay against the vhost-user GPU backend listening on this socket.
    #[arg(long, value_name = "SOCKET")]
    backend: Option<PathBuf>,
    /// With a backend: seconds one command may take before the backend counts as stalled.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_BACKEND_TIMEOUT.as_secs_f64(),
          value_parser = parse_timeout)]
    backend_timeout: f64,
}

fn parse_timeout(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(v)
    } else {
        Err(format!("{s}: expected seconds above 0 and at most 86400"))
    }
}

fn parse_range(s: &str) -> Result<(RecordId, Option<RecordId>), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("expected A..B, got {s:?}"))?;
    let a = if a.is_empty() {
        0
    } else {
        a.parse().map_err(|e| format!("start {a:?}: {e}"))?
    };
    let b = if b.is_empty() {
        None
    } else {
        Some(b.parse().map_err(|e| format!("end {b:?}: {e}"))?)
    };
    if b.is_some_and(|b| b <= a) {
        return Err(format!("range {s} is empty"));
    }
    Ok((a, b))
}

/// Progress bar on a terminal, one line per finding on stderr.
struct Console {
    bar: ProgressBar,
}

impl Console {
    fn line(&self, text: &str) {
        self.bar.suspend(|| eprintln!("vgt-replay: {text}"));
    }
}

impl ReplayObserver for Console {
    fn started(&mut self, loop_index: u32, records: u64) {
        self.bar.set_length(records);
        self.bar.set_position(0);
        if loop_index > 0 {
            self.bar.set_message(format!("loop {}", loop_index + 1));
        }
    }

    fn progress(&mut self, record: RecordId) {
        self.bar.set_position(record);
    }

    fn divergence(&mut self, d: &Divergence) {
        self.line(&format!("divergence: {d}"));
    }

    fn unsupported(&mut self, u: &Unsupported) {
        self.line(&u.to_string());
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let reader = match CaptureReader::open(&cli.file) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vgt-replay: error: {}: {e}", cli.file.display());
            return ExitCode::from(2);
        }
    };
    let (start, end) = match (cli.range, cli.until) {
        (Some((a, b)), _) => (a, b),
        (None, Some(n)) => (0, Some(n.saturating_add(1))),
        (None, None) => (0, None),
    };
    let options = ReplayOptions {
        start,
        end,
        keep_going: cli.keep_going,
        frames_dir: cli.frames_dir,
        timing: cli.timing,
        loops: cli.loops,
        device_config: None,
        verify_thread: None,
        decode_threads: None,
        backend: cli
            .backend_cmd
            .map(BackendSpec::Command)
            .or(cli.backend.map(BackendSpec::Socket))
            .map(|spec| BackendOptions {
                spec,
                timeout: std::time::Duration::from_secs_f64(cli.backend_timeout),
            }),
    };
    if options.backend.is_some() && options.loops > 1 && cli_uses_socket(&options) {
        eprintln!(
            "vgt-replay: error: --loop needs --backend-cmd (a backend on a socket serves one connection)"
        );
        return ExitCode::from(2);
    }
    let bar = ProgressBar::with_draw_target(
        Some(reader.len()),
        if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} records {per_sec} eta {eta} {msg}")
    {
        bar.set_style(style);
    }
    let mut console = Console { bar };
    let result = Replayer::new(&reader, options).run(&mut console);
    console.bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vgt-replay: error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    let written = if cli.json {
        serde_json::to_value(&report)
            .map(|mut summary| {
                if let Some(map) = summary.as_object_mut() {
                    map.insert(
                        "x_realtime".to_owned(),
                        serde_json::json!(report.x_realtime()),
                    );
                    map.insert(
                        "identical".to_owned(),
                        serde_json::json!(report.is_identical()),
                    );
                }
                summary
            })
            .and_then(|summary| serde_json::to_writer_pretty(&mut out, &summary))
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        report.write_summary(&mut out)
    };
    if let Err(e) = written {
        eprintln!("vgt-replay: error: writing the summary: {e}");
        return ExitCode::from(2);
    }
    if report.is_identical() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn cli_uses_socket(options: &ReplayOptions) -> bool {
    matches!(
        options.backend.as_ref().map(|b| &b.spec),
        Some(BackendSpec::Socket(_))
    )
}
