//! `vgt-inspect check`: runs the check engine over a capture and prints the findings.

use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::json;
use vgt_format::CaptureReader;

use crate::check::{CheckId, Severity, check_capture};
use crate::cli::Outcome;

/// Runs `check`: text (one line per finding, then a summary) or one JSON object.
pub fn run(path: &Path, json: bool, out: &mut dyn Write) -> Result<Outcome> {
    let reader =
        CaptureReader::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let health = reader.health().clone();
    for c in &health.corrupt {
        eprintln!(
            "vgt-inspect: warning: {} is damaged at byte {} ({:?}): {}",
            path.display(),
            c.offset,
            c.kind,
            c.detail
        );
    }
    let report = check_capture(&reader);
    if json {
        let v = json!({
            "file": path.display().to_string(),
            "records": report.records,
            "commands": report.commands,
            "unreadable_records": report.unreadable_records,
            "findings": report.findings,
            "suppressed": report
                .suppressed
                .iter()
                .map(|(k, n)| (k.name().to_string(), json!(n)))
                .collect::<serde_json::Map<_, _>>(),
            "total": report.total(),
            "peak_live_resources": report.peak_live_resources,
            "peak_live_bytes": report.peak_live_bytes,
            "peak_at": report.peak_at,
            "live_resources_at_end": report.live_resources_at_end,
            "checks": CheckId::ALL.iter().map(|c| c.name()).collect::<Vec<_>>(),
        });
        writeln!(out, "{v}")?;
    } else {
        for f in &report.findings {
            let ids: Vec<String> = f.records.iter().map(|r| format!("#{r}")).collect();
            writeln!(
                out,
                "{:<7} {:<18} {:<16} {}",
                f.severity.name(),
                f.check.name(),
                ids.join(","),
                crate::describe::printable(&f.message)
            )?;
        }
        for (check, n) in &report.suppressed {
            writeln!(
                out,
                "note    {:<18} {n} more findings not shown",
                check.name()
            )?;
        }
        let errors = report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count();
        writeln!(
            out,
            "{} findings ({errors} errors, {} warnings shown) in {} records, {} commands; peak {} live resources ({} bytes) at {}",
            report.total(),
            report.findings.len() - errors,
            report.records,
            report.commands,
            report.peak_live_resources,
            report.peak_live_bytes,
            report
                .peak_at
                .map_or_else(|| "-".to_string(), |p| format!("#{p}")),
        )?;
    }
    let damaged = !health.corrupt.is_empty() || report.unreadable_records > 0;
    Ok(Outcome {
        damaged,
        findings: report.total() > 0,
    })
}
