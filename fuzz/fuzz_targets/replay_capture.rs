//! Fuzz target: any bytes opened as a capture and replayed (a bug report from someone else's
//! machine is untrusted input). Replay never panics or hangs, and keeps its promise that the
//! report is the same whether frames are verified and blobs decoded on threads of their own or
//! on the replaying thread. Fuzzing builds take any CRC (`--cfg fuzzing`), so mutations reach
//! the record decoders and the replay engine.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgt_format::file::CaptureReader;
use vgt_replay::{Quiet, ReplayOptions, Replayer, device_config_for};

fn replay(reader: &CaptureReader, threads: bool) -> Option<vgt_replay::ReplayReport> {
    let mut config = device_config_for(reader);
    // A capture may ask for resources of up to 512 MiB; keep one run small and fast.
    config.max_resource_bytes = config.max_resource_bytes.min(8 << 20);
    config.max_total_bytes = config.max_total_bytes.min(32 << 20);
    let options = ReplayOptions {
        keep_going: true,
        loops: 2,
        device_config: Some(config),
        verify_thread: Some(threads),
        decode_threads: Some(if threads { 2 } else { 0 }),
        ..ReplayOptions::default()
    };
    let mut report = Replayer::new(reader, options).run(&mut Quiet).ok()?;
    report.wall_ns = 0;
    let mut summary = Vec::new();
    report.write_summary(&mut summary).expect("summary into a Vec");
    serde_json::to_string(&report).expect("report as JSON");
    Some(report)
}

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = CaptureReader::from_bytes(data.to_vec()) else {
        return;
    };
    let alone = replay(&reader, false);
    let threaded = replay(&reader, true);
    assert_eq!(alone, threaded, "replay reports differ with and without threads");
});
