//! Fuzz target: any bytes opened as a capture must never panic; whatever opens is iterated,
//! read at random, its payloads read and the whole file verified.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgt_format::file::CaptureReader;

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = CaptureReader::from_bytes(data.to_vec()) else {
        return;
    };
    let _ = reader.health();
    let _ = reader.index_stats();
    let _ = reader.frames();
    for item in reader.iter().take(4096) {
        if let Ok((_, record)) = item {
            for p in record.body.payloads() {
                let _ = reader.read_payload(p);
            }
        }
    }
    let n = reader.len();
    for id in [0, n / 2, n.saturating_sub(1), n] {
        let _ = reader.record(id);
        let _ = reader.record_offset(id);
    }
    let _ = reader.verify();
});
