//! Fuzz target: the proxy's display relay (`vgt_capture::proxy::gpu::fuzzing`): arbitrary
//! backend messages on the vhost-user-gpu socket (SCANOUT, UPDATE with pixels, cursor
//! messages, dmabuf scanouts over memfds the input sizes, DMABUF_UPDATE) recorded and composed
//! as the forwarding thread does. A backend must never make the proxy panic or exhaust memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vgt_capture::proxy::gpu::fuzzing::run(data));
