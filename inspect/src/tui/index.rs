//! The background pass that indexes a capture for the browser: the per-record summary table
//! (for filters, links, the timeline), the state checkpoints (for the resources view) and the
//! check findings (for highlighting and jumping).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, channel};

use vgt_format::CaptureReader;
use vgt_format::record::RecordId;
use vgt_format::state::StateIndex;
use vgt_format::summary::{RecordSummary, SummaryLinker, summarize};

use crate::check::{Checker, Finding};

/// Records between two saved device states.
pub const STATE_INTERVAL: u64 = 4096;

/// What the background pass produces.
#[derive(Debug)]
pub struct Indexed {
    /// One summary per record, in record order (a damaged record gets a zeroed summary).
    pub table: Vec<RecordSummary>,
    /// Device states every [`STATE_INTERVAL`] records.
    pub states: StateIndex,
    /// Every check finding.
    pub findings: Vec<Finding>,
    /// Finding indices per record (the first record of each finding).
    pub findings_by_record: HashMap<RecordId, usize>,
    /// Records that are errors or findings, sorted: targets of "next error".
    pub marks: Vec<RecordId>,
}

/// Builds everything in one sequential pass. `progress` counts records done; `cancel` stops
/// early (the result is then incomplete and should be dropped).
pub fn build(reader: &CaptureReader, progress: &AtomicU64, cancel: &AtomicBool) -> Indexed {
    let len = reader.len();
    // The count comes from the file: reserve for it only up to a sane bound.
    let mut table = Vec::with_capacity(usize::try_from(len.min(1 << 24)).unwrap_or(0));
    let mut linker = SummaryLinker::new();
    let mut states = StateIndex::new(STATE_INTERVAL);
    let mut checker = Checker::new();
    for (n, item) in reader.iter().enumerate() {
        let id = n as RecordId;
        if n % 4096 == 0 {
            progress.store(id, Ordering::Relaxed);
            if cancel.load(Ordering::Relaxed) {
                break;
            }
        }
        match item {
            Ok((_, record)) => {
                table.push(summarize(&record, reader));
                linker.link(&mut table, id);
                states.observe(id, Some(&record), reader);
                checker.observe(id, &record, reader);
            }
            Err(_) => {
                table.push(blank());
                states.observe(id, None, reader);
            }
        }
    }
    let report = checker.finish();
    let mut findings_by_record = HashMap::new();
    let mut marks: Vec<RecordId> = table
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_error())
        .map(|(i, _)| i as RecordId)
        .collect();
    for (i, f) in report.findings.iter().enumerate() {
        if let Some(&r) = f.records.first() {
            findings_by_record.entry(r).or_insert(i);
            marks.push(r);
        }
    }
    marks.sort_unstable();
    marks.dedup();
    progress.store(len, Ordering::Relaxed);
    Indexed {
        table,
        states,
        findings: report.findings,
        findings_by_record,
        marks,
    }
}

fn blank() -> RecordSummary {
    RecordSummary {
        ts_ns: 0,
        link: vgt_format::summary::NO_RECORD,
        fence: 0,
        code: 0,
        response_code: 0,
        resource: 0,
        ctx: 0,
        kind: vgt_format::record::RecordKind(0),
        queue: 0,
        flags: vgt_format::summary::FLAG_UNDECODABLE,
        ring: 0,
    }
}

/// The background indexer: a thread, its progress and the channel its result arrives on.
#[derive(Debug)]
pub struct Indexer {
    /// Records indexed so far.
    pub progress: Arc<AtomicU64>,
    cancel: Arc<AtomicBool>,
    rx: Receiver<Indexed>,
}

impl Indexer {
    /// Starts indexing `reader` on a new thread.
    pub fn spawn(reader: Arc<CaptureReader>) -> Indexer {
        let progress = Arc::new(AtomicU64::new(0));
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = channel();
        let (p, c) = (progress.clone(), cancel.clone());
        std::thread::spawn(move || {
            let indexed = build(&reader, &p, &c);
            // The receiver is gone when the browser quit first: nothing to do.
            let _ = tx.send(indexed);
        });
        Indexer {
            progress,
            cancel,
            rx,
        }
    }

    /// The result, once ready.
    pub fn try_take(&self) -> Option<Indexed> {
        self.rx.try_recv().ok()
    }

    /// Blocks until the result is ready (`None` if the thread died).
    pub fn wait(&self) -> Option<Indexed> {
        self.rx.recv().ok()
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}
