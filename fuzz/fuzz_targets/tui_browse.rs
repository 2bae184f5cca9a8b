//! Fuzz target: vgt-inspect's terminal browser (`vgt_inspect::tui::fuzzing`): any bytes
//! opened as a capture and browsed with keys, typed filters, clicks, jumps and terminal sizes,
//! each step prepared and drawn as the main loop does. Nothing may panic, and a non-empty list
//! always has a selected record.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vgt_inspect::tui::fuzzing::run(data);
});
