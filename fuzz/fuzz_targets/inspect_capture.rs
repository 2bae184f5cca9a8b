//! Fuzz target: vgt-inspect's analyses of any bytes opened as a capture (a capture attached to
//! a bug report is untrusted input): info, stats, every check, the Chrome-trace export, each
//! record's one-line and JSON description, and the state model. Never a panic, and the state
//! at a record is the same from the nearest checkpoint as folded from the first record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgt_format::file::CaptureReader;
use vgt_format::state::{DeviceState, StateIndex};
use vgt_inspect::{check, describe, export, info, stats};

/// Records looked at per input (iteration past it costs time and finds nothing new).
const RECORDS: usize = 2048;

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = CaptureReader::from_bytes(data.to_vec()) else {
        return;
    };
    let summary = info::Summary::gather(&reader);
    let _ = summary.frames();
    let s = stats::gather(&reader);
    serde_json::to_string(&s).expect("stats as JSON");
    let report = check::check_capture(&reader);
    serde_json::to_string(&report).expect("check report as JSON");
    let _ = export::write_chrome_trace(&reader, &mut Vec::new());

    let mut folded = DeviceState::new();
    let mut states = Vec::new();
    for item in reader.iter().take(RECORDS) {
        let Ok((id, record)) = item else { break };
        let _ = describe::describe(&record, &reader);
        let _ = describe::to_json(id, &record, &reader);
        folded.apply(id, &record, &reader);
        if id % 5 == 3 {
            states.push((id, serde_json::to_value(&folded).expect("state as JSON")));
        }
    }
    let index = StateIndex::build(&reader, 7);
    for (id, want) in states {
        let Some(at) = index.state_at(&reader, id) else {
            continue;
        };
        assert_eq!(
            serde_json::to_value(&at).expect("state as JSON"),
            want,
            "state at record {id} from its checkpoint"
        );
    }
});
