//! The content hash every vgt tool shares: XXH3-128 of the uncompressed bytes.

/// XXH3-128 (seed 0, default secret) of `bytes`: the hash the capture file stores for every blob
/// and frame (FORMAT.md, "Content hashes").
///
/// The implementation (twox-hash) picks its SIMD path at run time (AVX2 where the CPU has it, else
/// SSE2 on x86-64, NEON on aarch64), so a portable build still hashes large frames at AVX2 speed.
/// The value never depends on the path taken.
#[must_use]
#[inline]
pub fn content_hash(bytes: &[u8]) -> u128 {
    twox_hash::XxHash3_128::oneshot(bytes)
}
