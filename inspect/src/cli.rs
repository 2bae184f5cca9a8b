//! Command-line parsing and dispatch for `vgt-inspect`.

use std::io::{self, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vgt_format::file::Compression;
use vgt_format::record::RecordKind;

/// Look inside vgt captures.
#[derive(Debug, Parser)]
#[command(name = "vgt-inspect", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do (without a verb: browse FILE in the terminal UI).
    #[command(subcommand)]
    pub verb: Option<Verb>,
    /// The capture to browse when no verb is given.
    pub file: Option<PathBuf>,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Summary of a capture: header, duration, record counts, payload storage, frames, health.
    Info {
        /// The capture file.
        file: PathBuf,
        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// One line per record, decoded (like `apitrace dump`).
    Dump {
        /// The capture file.
        file: PathBuf,
        /// Only records in this range of record numbers: `A..B` (B excluded), `A..=B`, `A..`,
        /// `..B` or a single number `N`.
        #[arg(long, value_parser = parse_range)]
        range: Option<Range<u64>>,
        /// Only records of this kind (repeatable): session, vhost-user, command, memory-read,
        /// response, fence, gpu-socket, frame, cursor, lifecycle, marker.
        #[arg(long, value_parser = parse_kind)]
        kind: Vec<RecordKind>,
        /// Emit JSON Lines (one object per record) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Automatic checks for known virtio-gpu bug classes; exits 1 when anything is found, 0
    /// when clean, 2 when the file cannot be read.
    Check {
        /// The capture file.
        file: PathBuf,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Command histogram, latency percentiles per command type, bytes moved, frames per second.
    Stats {
        /// The capture file.
        file: PathBuf,
        /// Print the statistics as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Browse a capture in the terminal (the default when only a file is given).
    Tui {
        /// The capture file.
        file: PathBuf,
    },
    /// Rewrite a capture with other blob compression (zstd by default: several times smaller,
    /// for attaching to a bug report). Same records, ids and payload bytes; prints the sizes
    /// before and after. Never overwrites IN.
    Repack {
        /// The capture to read.
        #[arg(value_name = "IN")]
        input: PathBuf,
        /// The capture to write (replaced when it exists; must not be IN).
        #[arg(value_name = "OUT")]
        output: PathBuf,
        /// Blob compression of OUT: lz4, zstd or zstd:LEVEL (levels 1-22; `zstd` is level 3) or
        /// none.
        #[arg(long, default_value = "zstd:19", value_name = "lz4|zstd[:LEVEL]|none")]
        compression: Compression,
    },
    /// Export commands and fences as Chrome trace / Perfetto JSON, and the recorded frames and
    /// cursor images as PNG files.
    #[command(group(
        clap::ArgGroup::new("output").required(true).multiple(true).args(["chrome_trace", "frames"])
    ))]
    Export {
        /// Write a Chrome trace event file here.
        #[arg(long, value_name = "OUT.json")]
        chrome_trace: Option<PathBuf>,
        /// Write every recorded frame as a PNG into DIR (created when missing), named
        /// frame-RECORD-sSCANOUT.png as `vgt-replay --frames-dir` names the replayed ones.
        #[arg(long, value_name = "DIR")]
        frames: Option<PathBuf>,
        /// With --frames: also every cursor image (cursor-RECORD-sSCANOUT.png, 64x64 RGBA).
        #[arg(long, requires = "frames")]
        cursors: bool,
        /// With --frames: only records in this range of record numbers (`A..B`, `A..=B`,
        /// `A..`, `..B` or `N`).
        #[arg(long, requires = "frames", value_parser = parse_range)]
        range: Option<Range<u64>>,
        /// With --frames: only this scanout.
        #[arg(long, requires = "frames", value_name = "N")]
        scanout: Option<u32>,
        /// The capture file.
        file: PathBuf,
    },
}

/// What a verb reports back to `main` besides its output.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The capture was damaged (corrupt chunks): exit non-zero after printing what was readable.
    pub damaged: bool,
    /// `check` found something: exit 1.
    pub findings: bool,
}

/// Parses `A..B`, `A..=B`, `A..`, `..B` or `N` into a half-open range of record numbers.
pub fn parse_range(s: &str) -> Result<Range<u64>, String> {
    let num = |t: &str| -> Result<u64, String> {
        t.trim()
            .parse::<u64>()
            .map_err(|_| format!("`{t}` is not a record number"))
    };
    let range = if let Some((a, b)) = s.split_once("..=") {
        let start = if a.is_empty() { 0 } else { num(a)? };
        let end = num(b)?
            .checked_add(1)
            .ok_or_else(|| "range end is too large".to_string())?;
        start..end
    } else if let Some((a, b)) = s.split_once("..") {
        let start = if a.is_empty() { 0 } else { num(a)? };
        let end = if b.is_empty() { u64::MAX } else { num(b)? };
        start..end
    } else {
        let n = num(s)?;
        n..n.saturating_add(1)
    };
    if range.start > range.end {
        return Err(format!(
            "range start {} is after its end {}",
            range.start, range.end
        ));
    }
    Ok(range)
}

/// Parses a record kind name as printed by `dump`.
pub fn parse_kind(s: &str) -> Result<RecordKind, String> {
    RecordKind::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = RecordKind::ALL.iter().map(|k| k.name()).collect();
        format!(
            "unknown record kind `{s}` (expected one of: {})",
            names.join(", ")
        )
    })
}

/// Runs a parsed command line, writing to `out`.
pub fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let verb = match (cli.verb, cli.file) {
        (Some(v), _) => v,
        (None, Some(file)) => Verb::Tui { file },
        (None, None) => anyhow::bail!("no capture given: vgt-inspect FILE, or vgt-inspect --help"),
    };
    match verb {
        Verb::Tui { file } => crate::tui::run(&file, out),
        Verb::Info { file, json } => crate::info::run(&file, json, out),
        Verb::Dump {
            file,
            range,
            kind,
            json,
        } => crate::dump::run(&file, range, &kind, json, out),
        Verb::Check { file, json } => crate::check_cmd::run(&file, json, out),
        Verb::Stats { file, json } => crate::stats::run(&file, json, out),
        Verb::Export {
            chrome_trace,
            frames,
            cursors,
            range,
            scanout,
            file,
        } => {
            let frames = frames.map(|dir| crate::frames::FrameExport {
                dir,
                cursors,
                range,
                scanout,
            });
            crate::export::run(&file, chrome_trace.as_deref(), frames.as_ref(), out)
        }
        Verb::Repack {
            input,
            output,
            compression,
        } => crate::repack::run(&input, &output, compression, out),
    }
}

/// Entry point of the binary: parse, run, print one line per error, map to an exit code
/// (0 success, 1 error or damaged capture, 2 bad arguments). `check` exits 1 on findings and 2
/// when its input cannot be read.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_check = matches!(cli.verb, Some(Verb::Check { .. }));
    let error_code = if is_check { 2 } else { 1 };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = run(cli, &mut out);
    let flushed = out.flush();
    match (result, flushed) {
        (Ok(outcome), Ok(())) => {
            if outcome.findings {
                ExitCode::from(1)
            } else if outcome.damaged {
                ExitCode::from(error_code)
            } else {
                ExitCode::SUCCESS
            }
        }
        // A closed pipe (`vgt-inspect dump f | head`) is not an error worth reporting.
        (Err(e), _) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        (Ok(_), Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        (Err(e), _) => {
            eprintln!("vgt-inspect: error: {e:#}");
            ExitCode::from(error_code)
        }
        (Ok(_), Err(e)) => {
            eprintln!("vgt-inspect: error: writing output: {e}");
            ExitCode::from(1)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<Range<u64>, ()>) {
        assert_eq!(
            parse_range(input).map_err(|_| ()),
            expected,
            "input {input:?}"
        );
    }

    #[test]
    fn range_forms_parse_to_half_open_ranges() {
        check("3..7", Ok(3..7));
        check("3..=7", Ok(3..8));
        check("3..", Ok(3..u64::MAX));
        check("..7", Ok(0..7));
        check("5", Ok(5..6));
        check(" 5 ", Ok(5..6));
    }

    #[test]
    fn malformed_ranges_are_rejected() {
        check("7..3", Err(()));
        check("a..3", Err(()));
        check("", Err(()));
        check("1..2..3", Err(()));
        check("..=18446744073709551615", Err(()));
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in RecordKind::ALL {
            assert_eq!(parse_kind(kind.name()), Ok(kind));
        }
        assert!(parse_kind("commands").is_err());
    }
}
