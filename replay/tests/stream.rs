//! Proxy captures are stream matched: their Frame and Cursor records follow the last command
//! the proxy took, not necessarily the one whose execution showed them, so replay matches them
//! in order over the whole capture, per scanout, and resynchronises past a frame one side
//! showed and the other did not. Built from a real device session with its display records
//! moved, as pipelining moves them in a proxy capture.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::*;
use vgt_format::CaptureReader;
use vgt_format::record::{CaptureMode, Record, RecordBody};
use vgt_replay::{DivergenceKind, ReplayOptions, ReplayReport, Replayer};

fn replay(bytes: &[u8]) -> ReplayReport {
    let reader = CaptureReader::from_bytes(bytes.to_vec()).unwrap();
    let options = ReplayOptions {
        keep_going: true,
        ..ReplayOptions::default()
    };
    Replayer::new(&reader, options)
        .run(&mut vgt_replay::Quiet)
        .unwrap()
}

/// The type name of the command recorded at `id`, as reports spell it.
fn recorded_name(bytes: &[u8], id: vgt_format::RecordId) -> String {
    let reader = CaptureReader::from_bytes(bytes.to_vec()).unwrap();
    let RecordBody::Command(c) = reader.record(id).unwrap().body else {
        panic!("record {id:?} is not a command");
    };
    let request = reader.read_payload(&c.request).unwrap();
    let code = u32::from_le_bytes(request[0..4].try_into().unwrap());
    vgt_format::wire::CommandType(code).to_string()
}

fn is_display(r: &Record) -> bool {
    matches!(r.body, RecordBody::Frame(_) | RecordBody::Cursor(_))
}

/// The session with `mode` and its Frame and Cursor records moved to the end (those `keep`
/// accepts, by position among them).
fn displaced(bytes: &[u8], mode: CaptureMode, keep: impl Fn(usize) -> bool) -> Vec<u8> {
    let mut moved = Vec::new();
    rewrite(bytes, |_, r| {
        if is_display(&r) {
            moved.push(r.clone());
        }
        Some(r)
    });
    let tail: Vec<Record> = moved
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, r)| r)
        .collect();
    rewrite_then(
        bytes,
        |_, mut r| {
            if let RecordBody::SessionStart(s) = &mut r.body {
                s.mode = mode;
            }
            (!is_display(&r)).then_some(r)
        },
        tail,
    )
}

#[test]
fn a_proxy_capture_whose_display_records_trail_its_commands_replays_identically() {
    // Six full frames, a partial one, a cursor: every Frame and Cursor record at the end.
    let bytes = linux_like(16, 8, 6).finish();
    let frames = records(&bytes)
        .iter()
        .filter(|(_, r)| matches!(r.body, RecordBody::Frame(_)))
        .count();
    assert!(frames >= 7, "{frames} frames");
    let proxy = displaced(&bytes, CaptureMode::Proxy, |_| true);
    let report = replay(&proxy);
    assert!(report.is_identical(), "{:#?}", report.divergences);
    assert_eq!(report.frames, frames as u64);
    // The same records in a built-in capture are matched per command window: every frame is
    // missing where the device showed it and extra where the capture has it.
    let builtin = displaced(&bytes, CaptureMode::BuiltIn, |_| true);
    let report = replay(&builtin);
    assert!(
        report
            .divergences
            .iter()
            .any(|d| matches!(d.kind, DivergenceKind::ExtraFrame { .. })),
        "{:?}",
        report.divergences
    );
}

#[test]
fn a_frame_one_side_lacks_is_one_divergence_not_a_shift_of_every_later_pair() {
    let bytes = linux_like(16, 8, 6).finish();
    // The third display record (a frame: the first two are the SET_SCANOUT frame and the first
    // flush's) is gone from the capture.
    let proxy = displaced(&bytes, CaptureMode::Proxy, |i| i != 2);
    let report = replay(&proxy);
    assert_eq!(report.divergences.len(), 1, "{:#?}", report.divergences);
    assert!(
        matches!(
            report.divergences[0].kind,
            DivergenceKind::ExtraFrame { .. }
        ),
        "{}",
        report.divergences[0]
    );
    // Matched after its command's response, the frame still names the command that showed it.
    assert_eq!(
        report.divergences[0].command_name,
        recorded_name(&proxy, report.divergences[0].command),
        "{}",
        report.divergences[0]
    );
    // And a frame the capture has that replay does not show.
    let mut moved = Vec::new();
    rewrite(&bytes, |_, r| {
        if is_display(&r) {
            moved.push(r.clone());
        }
        Some(r)
    });
    let extra = moved
        .iter()
        .find(|r| matches!(r.body, RecordBody::Frame(_)))
        .cloned()
        .unwrap();
    let mut tail = moved.clone();
    tail.insert(3, extra);
    let proxy = rewrite_then(
        &bytes,
        |_, mut r| {
            if let RecordBody::SessionStart(s) = &mut r.body {
                s.mode = CaptureMode::Proxy;
            }
            (!is_display(&r)).then_some(r)
        },
        tail,
    );
    let report = replay(&proxy);
    assert_eq!(report.divergences.len(), 1, "{:#?}", report.divergences);
    assert!(
        matches!(
            report.divergences[0].kind,
            DivergenceKind::MissingFrame { .. }
        ),
        "{}",
        report.divergences[0]
    );
    assert_eq!(
        report.divergences[0].command_name,
        recorded_name(&proxy, report.divergences[0].command),
        "{}",
        report.divergences[0]
    );
}
