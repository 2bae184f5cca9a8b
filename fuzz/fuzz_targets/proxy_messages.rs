//! Fuzz target: the proxy's vhost-user message rewriting (`vgt_capture::proxy::fuzzing`):
//! arbitrary front-end requests with descriptors, backend replies, guest memory writes and
//! queue-worker steps. Neither peer may make the proxy panic, and each forwarded message must
//! differ from what was sent only where the proxy rewrites it (documented on
//! `proxy::fuzzing::run`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vgt_capture::proxy::fuzzing::run(data);
});
