//! Fuzz target: the proxy's shadow-virtqueue engine (`vgt_capture::proxy::rings`) driven by
//! arbitrary guest ring contents, backend used entries and front-end ring changes at once. A
//! guest, a buggy backend (what proxy mode exists to debug) or a front-end must never make the
//! proxy panic or hang. The operations are documented on `rings::fuzzing::run`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vgt_capture::proxy::rings::fuzzing::run(data));
