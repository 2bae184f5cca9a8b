//! Tests of the wire protocol: hand-built bytes at the reference offsets, round trips and
//! property tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod commands;
mod edid;
mod gpu_socket;
mod props;
mod responses;
mod types;
mod vhost_user;

/// Writes a little-endian u32 at `off`, growing `v` as needed.
pub(super) fn put_u32(v: &mut Vec<u8>, off: usize, val: u32) {
    put(v, off, &val.to_le_bytes());
}

/// Writes a little-endian u64 at `off`, growing `v` as needed.
pub(super) fn put_u64(v: &mut Vec<u8>, off: usize, val: u64) {
    put(v, off, &val.to_le_bytes());
}

/// Writes bytes at `off`, growing `v` as needed.
pub(super) fn put(v: &mut Vec<u8>, off: usize, bytes: &[u8]) {
    if v.len() < off + bytes.len() {
        v.resize(off + bytes.len(), 0);
    }
    v[off..off + bytes.len()].copy_from_slice(bytes);
}

/// `size` zero bytes with `code` as the header type.
pub(super) fn msg(code: u32, size: usize) -> Vec<u8> {
    let mut v = vec![0; size];
    put_u32(&mut v, 0, code);
    v
}
