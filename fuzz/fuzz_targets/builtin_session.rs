//! Fuzz target: built-in mode's vhost-user face (`vgt_capture::session::fuzzing`): a whole
//! session (relay, vhost-user-backend daemon, queue worker, vgt-device, capture file) fed
//! arbitrary front-end requests with descriptors, guest memory writes and kicks. No input may
//! crash the process or the device, hang the session, or leave a capture that differs from
//! what travelled (documented on `session::fuzzing::run`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vgt_capture::session::fuzzing::run(data);
});
