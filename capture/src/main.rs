//! `vgt-capture`: serve QEMU's vhost-user-gpu device and record everything into a capture file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use vgt_capture::server::{self, Options, Outcome, SyncMode};

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
#[command(version, about)]
struct Cli {
    /// vhost-user socket to listen on.
    #[arg(long)]
    socket: PathBuf,
    /// Capture file to write. With --keep-listening, later connections go to NAME-1.EXT,
    /// NAME-2.EXT … (or FILE.1, FILE.2 … when FILE has no extension).
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Number of scanouts (1-16).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    scanouts: u32,
    /// Scanout size reported when QEMU reports none, WIDTHxHEIGHT.
    #[arg(long, default_value = "1024x768", value_parser = parse_size)]
    size: (u32, u32),
    /// When records reach the operating system.
    #[arg(long, value_enum, default_value_t = SyncArg::CrashSafe)]
    sync: SyncArg,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let opts = Options {
        socket: cli.socket,
        output: cli.output,
        scanouts: cli.scanouts,
        size: cli.size,
        sync: match cli.sync {
            SyncArg::CrashSafe => SyncMode::CrashSafe,
            SyncArg::Buffered => SyncMode::Buffered,
        },
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
