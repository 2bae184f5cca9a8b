//! Benchmarks of the browser on a synthetic 1,000,000-record capture: open + first screen,
//! a filter over the summary table, and drawing one frame, each with a same-run baseline.
//!
//! The capture is written once to `$VGT_BENCH_CAPTURE` (default: the system temp directory)
//! and reused while its record count matches.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;
use ratatui::widgets::Paragraph;
use vgt_format::CaptureReader;
use vgt_format::record::{LifecycleKind, RecordKind};
use vgt_format::testing::CaptureBuilder;
use vgt_format::{CaptureWriter, WriterOptions};
use vgt_inspect::tui::app::{Action, App, FREE_TEXT_BUDGET};
use vgt_inspect::tui::draw::draw;
use vgt_inspect::tui::filter::Filter;
use vgt_inspect::tui::index;

const RECORDS: u64 = 1_000_000;

fn capture() -> PathBuf {
    let path = std::env::var_os("VGT_BENCH_CAPTURE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("vgt-inspect-bench-1m.vgt"));
    if let Ok(r) = CaptureReader::open(&path)
        && r.len() >= RECORDS
    {
        return path;
    }
    let t = Instant::now();
    let writer = CaptureWriter::create(&path, WriterOptions::default()).unwrap();
    let mut b = CaptureBuilder::new(writer, 1).unwrap();
    b.linux_boot(8, 8, ((RECORDS - 9) / 7 + 1) as u32).unwrap();
    b.lifecycle(LifecycleKind::End, "end").unwrap();
    let stats = b.finish().unwrap();
    eprintln!(
        "wrote {} ({} records, {} bytes) in {:?}",
        path.display(),
        stats.records,
        stats.file_bytes,
        t.elapsed()
    );
    path
}

fn benches(c: &mut Criterion) {
    let path = capture();
    let len = CaptureReader::open(&path).unwrap().len();
    let size = Rect::new(0, 0, 80, 24);

    let mut g = c.benchmark_group("open_first_screen_1m");
    g.throughput(Throughput::Elements(1));
    g.bench_function("browser", |b| {
        b.iter(|| {
            let reader = Arc::new(CaptureReader::open(&path).unwrap());
            let mut app = App::new(reader, "bench.vgt", false);
            app.prepare(size);
            let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
            t.draw(|f| draw(f, &app)).unwrap();
            black_box(app.rows.len());
        });
    });
    // Baseline: open and read the same first records sequentially, nothing drawn.
    g.bench_function("baseline_open_read_10", |b| {
        b.iter(|| {
            let reader = CaptureReader::open(&path).unwrap();
            black_box(reader.iter_range(0..10).filter(Result::is_ok).count());
        });
    });
    g.finish();

    // The table the filters run over, built once as the browser's background thread does.
    let reader = CaptureReader::open(&path).unwrap();
    let t = Instant::now();
    let indexed = index::build(&reader, &AtomicU64::new(0), &AtomicBool::new(false));
    eprintln!("index of {len} records built in {:?}", t.elapsed());
    let mut g = c.benchmark_group("filter_1m");
    g.sample_size(20);
    g.throughput(Throughput::Elements(len));
    for text in [
        "type:flush",
        "res:2 code:nodata t:0.1-0.5",
        "err",
        "transfer",
    ] {
        let f = Filter::parse(text).unwrap();
        g.bench_function(text, |b| {
            b.iter(|| black_box(f.apply(&indexed.table, &indexed.marks).len()));
        });
    }
    // Free text found only in decoded descriptions, as the browser applies it: descriptions
    // are built from the capture until the browser's time budget runs out.
    let decoder = CaptureReader::open(&path).unwrap();
    for text in ["8x8", "kind:command res:2 8x8"] {
        let f = Filter::parse(text).unwrap();
        let mut decode = |id| {
            decoder
                .record(id)
                .ok()
                .map(|r| vgt_inspect::describe::describe(&r, &decoder))
        };
        let a = f.apply_decoded(
            &indexed.table,
            &indexed.marks,
            &mut decode,
            Instant::now() + FREE_TEXT_BUDGET,
        );
        eprintln!(
            "`{text}`: {} matches, decoding stopped at {:?}",
            a.matches.len(),
            a.decoded_until
        );
        g.bench_function(format!("decoded {text}"), |b| {
            b.iter(|| {
                let mut decode = |id| {
                    decoder
                        .record(id)
                        .ok()
                        .map(|r| vgt_inspect::describe::describe(&r, &decoder))
                };
                let deadline = Instant::now() + FREE_TEXT_BUDGET;
                let a = f.apply_decoded(&indexed.table, &indexed.marks, &mut decode, deadline);
                black_box((a.matches.len(), a.decoded_until))
            });
        });
    }
    // Baseline: one pass over the table selecting commands (the least a filter can do).
    g.bench_function("baseline_scan_kind", |b| {
        b.iter(|| {
            black_box(
                indexed
                    .table
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.kind == RecordKind::COMMAND)
                    .map(|(i, _)| i as u64)
                    .collect::<Vec<_>>()
                    .len(),
            )
        });
    });
    g.finish();

    let mut g = c.benchmark_group("draw_frame");
    g.throughput(Throughput::Elements(1));
    let reader = Arc::new(CaptureReader::open(&path).unwrap());
    let mut app = App::new(reader, "bench.vgt", false);
    app.apply(Action::Jump(len / 2));
    app.prepare(size);
    let mut term = Terminal::new(TestBackend::new(80, 24)).unwrap();
    g.bench_function("list_and_detail_80x24", |b| {
        b.iter(|| {
            app.prepare(size);
            term.draw(|f| draw(f, &app)).unwrap();
        });
    });
    g.bench_function("scroll_one_row_80x24", |b| {
        let mut down = true;
        b.iter(|| {
            app.apply(if down { Action::Down(1) } else { Action::Up(1) });
            down = !down;
            app.prepare(size);
            term.draw(|f| draw(f, &app)).unwrap();
        });
    });
    // Baseline: a frame of the same size with one plain paragraph.
    g.bench_function("baseline_blank_80x24", |b| {
        b.iter(|| {
            term.draw(|f| f.render_widget(Paragraph::new("x"), f.area()))
                .unwrap();
        });
    });
    g.finish();
}

criterion_group!(inspect_benches, benches);
criterion_main!(inspect_benches);
