//! Fuzz target: every wire decoder either rejects the input or gives back a value that
//! re-encodes to exactly the input (and prints without panicking).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgt_format::wire::gpu_socket::GpuSocketRequest;
use vgt_format::wire::vhost_user::{BackendRequest, VhostUserRequest, decode_backend_payload};
use vgt_format::wire::{Request, Response, decode_gpu_socket_payload, decode_vhost_user_payload};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::decode(data) {
        assert_eq!(r.encode(), data);
        let _ = r.to_string();
    }
    if let Ok(r) = Response::decode(data) {
        assert_eq!(r.encode(), data);
        let _ = r.to_string();
    }
    // Side protocols: byte 0 picks the code, byte 1 the direction, the rest is the payload.
    if let [code, dir, payload @ ..] = data {
        let is_reply = dir & 1 != 0;
        let code = u32::from(*code);
        if let Ok(p) = decode_vhost_user_payload(VhostUserRequest(code % 48), is_reply, payload) {
            assert_eq!(p.encode(), payload);
            let _ = p.to_string();
        }
        if let Ok(p) = decode_backend_payload(BackendRequest(code % 12), is_reply, payload) {
            assert_eq!(p.encode(), payload);
            let _ = p.to_string();
        }
        if let Ok(p) = decode_gpu_socket_payload(GpuSocketRequest(code % 14), is_reply, payload) {
            assert_eq!(p.encode(), payload);
            let _ = p.to_string();
        }
    }
});
