//! `vgt-capture`: serve QEMU's vhost-user-gpu device and record everything into a capture file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use vgt_capture::proxy::{self, BackendSpec, ProxyOptions, ProxyOutcome};
use vgt_capture::server::{self, Options, Outcome, SyncMode};
use vgt_format::file::Compression;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SyncArg {
    /// Each record reaches the OS before the device runs the command (default).
    CrashSafe,
    /// Records are buffered and written in batches (faster, may lose the tail on a crash).
    Buffered,
}

/// A recording vhost-user GPU backend. Start it, then start QEMU with
/// `-chardev socket,id=vgpu,path=SOCKET -device vhost-user-gpu-pci,chardev=vgpu` and shared
/// guest memory (`-object memory-backend-memfd,share=on`).
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Sit between QEMU and an existing vhost-user GPU backend and record everything (QEMU
    /// connects to --socket; the proxy connects to the backend). Exits 3 when the backend
    /// crashes or closes the connection, naming the commands in flight.
    Proxy(ProxyArgs),
}

#[derive(Debug, Args)]
struct ProxyArgs {
    /// vhost-user socket QEMU connects to.
    #[arg(long)]
    socket: PathBuf,
    /// Socket of a backend that is already listening.
    #[arg(
        long,
        conflicts_with = "backend_cmd",
        required_unless_present = "backend_cmd"
    )]
    backend: Option<PathBuf>,
    /// Shell command that starts the backend; `%s` is replaced by the socket path it must
    /// listen on (e.g. '/usr/lib/qemu/vhost-user-gpu --socket-path %s').
    #[arg(long)]
    backend_cmd: Option<String>,
    /// Capture file to write.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// When records reach the operating system.
    #[arg(long, value_enum, default_value_t = SyncArg::CrashSafe)]
    sync: SyncArg,
    /// Blob compression: lz4 (fast enough for any guest), zstd or zstd:LEVEL (levels 1-22, `zstd`
    /// is 3; several times smaller; high levels fall behind the guest, so shrink a finished
    /// capture with `vgt-inspect repack` instead) or none.
    #[arg(long, default_value = "lz4", value_name = "lz4|zstd[:LEVEL]|none")]
    compression: Compression,
    /// No progress messages.
    #[arg(long, short)]
    quiet: bool,
    /// Seconds a command may stay unanswered before the proxy records and prints that the
    /// backend has not answered it (once per command; 0: never).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    stall_warn: u64,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// vhost-user socket to listen on.
    #[arg(long, required = true)]
    socket: Option<PathBuf>,
    /// Capture file to write. With --keep-listening, later connections go to NAME-1.EXT,
    /// NAME-2.EXT … (or FILE.1, FILE.2 … when FILE has no extension).
    #[arg(short = 'o', long = "output", required = true)]
    output: Option<PathBuf>,
    /// Number of scanouts (1-16).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    scanouts: u32,
    /// Scanout size reported when QEMU reports none, WIDTHxHEIGHT.
    #[arg(long, default_value = "1024x768", value_parser = parse_size)]
    size: (u32, u32),
    /// When records reach the operating system.
    #[arg(long, value_enum, default_value_t = SyncArg::CrashSafe)]
    sync: SyncArg,
    /// Blob compression: lz4 (fast enough for any guest), zstd or zstd:LEVEL (levels 1-22, `zstd`
    /// is 3; several times smaller; high levels fall behind the guest, so shrink a finished
    /// capture with `vgt-inspect repack` instead) or none.
    #[arg(long, default_value = "lz4", value_name = "lz4|zstd[:LEVEL]|none")]
    compression: Compression,
    /// Serve the guest without writing a capture.
    #[arg(long)]
    no_record: bool,
    /// No status line.
    #[arg(long, short)]
    quiet: bool,
    /// After a disconnect, wait for the next connection and record it into a new file.
    #[arg(long)]
    keep_listening: bool,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WIDTHxHEIGHT, got {s:?}"))?;
    let w: u32 = w.parse().map_err(|e| format!("width {w:?}: {e}"))?;
    let h: u32 = h.parse().map_err(|e| format!("height {h:?}: {e}"))?;
    if w == 0 || h == 0 || w > 16384 || h > 16384 {
        return Err(format!("size {w}x{h} must be between 1x1 and 16384x16384"));
    }
    Ok((w, h))
}

fn sync_mode(s: SyncArg) -> SyncMode {
    match s {
        SyncArg::CrashSafe => SyncMode::CrashSafe,
        SyncArg::Buffered => SyncMode::Buffered,
    }
}

fn run_proxy(a: ProxyArgs) -> ExitCode {
    let backend = match (a.backend, a.backend_cmd) {
        (Some(p), _) => BackendSpec::Socket(p),
        (None, Some(c)) => BackendSpec::Command(c),
        (None, None) => {
            eprintln!("vgt-capture proxy: error: --backend or --backend-cmd is required");
            return ExitCode::from(2);
        }
    };
    let opts = ProxyOptions {
        socket: a.socket,
        backend,
        output: a.output,
        sync: sync_mode(a.sync),
        compression: a.compression,
        quiet: a.quiet,
        stall_warn: (a.stall_warn > 0).then(|| std::time::Duration::from_secs(a.stall_warn)),
    };
    match proxy::run(&opts) {
        Ok(ProxyOutcome::Clean) => ExitCode::SUCCESS,
        Ok(ProxyOutcome::BackendCrashed(summary)) => {
            eprintln!("vgt-capture proxy: the {summary}");
            eprintln!(
                "vgt-capture proxy: the capture {} is finished and holds these commands",
                opts.output.display()
            );
            ExitCode::from(3)
        }
        Ok(ProxyOutcome::BackendFailed(why)) => {
            eprintln!("vgt-capture proxy: {why}");
            ExitCode::from(5)
        }
        Err(e) => {
            eprintln!("vgt-capture proxy: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Mode::Proxy(a)) = cli.mode {
        return run_proxy(a);
    }
    let cli = cli.serve;
    let (Some(socket), Some(output)) = (cli.socket, cli.output) else {
        eprintln!("vgt-capture: error: --socket and --output are required");
        return ExitCode::from(2);
    };
    let opts = Options {
        socket,
        output,
        scanouts: cli.scanouts,
        size: cli.size,
        sync: sync_mode(cli.sync),
        compression: cli.compression,
        record: !cli.no_record,
        quiet: cli.quiet,
        keep_listening: cli.keep_listening,
    };
    match server::run(&opts) {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Crashed) => {
            eprintln!("vgt-capture: the device crashed; the capture holds the crashing command");
            ExitCode::from(3)
        }
        Ok(Outcome::RecordFailed) => ExitCode::from(4),
        Err(e) => {
            eprintln!("vgt-capture: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
