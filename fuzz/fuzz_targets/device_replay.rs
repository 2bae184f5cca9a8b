//! Fuzz target: any sequence of descriptor chains against vgt-device. The device never panics,
//! answers every chain within its bounds, and a device fed only the reads the first one reported
//! (as vgt-replay is) answers identically. The checks live in `harness/device_replay.rs`, shared
//! with `replay/tests/fuzz_inputs.rs`.
#![no_main]

#[allow(dead_code)]
#[path = "../harness/device_replay.rs"]
mod device_replay;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| device_replay::run(data));
