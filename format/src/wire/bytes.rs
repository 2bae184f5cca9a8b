//! Little-endian field access that never panics.
//!
//! Decoders check a struct's full length first and then read fields at the offsets of the
//! reference tables; these helpers return 0 for a field outside the slice instead of panicking,
//! which can only happen through a wrong constant (the tests would catch it).

use super::DecodeError;

/// Reads a `u8` at `off`.
pub(crate) fn le8(b: &[u8], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}

/// Reads a little-endian `u16` at `off`.
pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(arr(b, off))
}

/// Reads a little-endian `u32` at `off`.
pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(arr(b, off))
}

/// Reads a little-endian `u64` at `off`.
pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(arr(b, off))
}

/// Copies `N` bytes at `off` into an array (zeros where the slice ends).
pub(crate) fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(s) = off.checked_add(N).and_then(|end| b.get(off..end)) {
        a.copy_from_slice(s);
    }
    a
}

/// Appends a little-endian `u16`.
pub(crate) fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a little-endian `u32`.
pub(crate) fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a little-endian `u64`.
pub(crate) fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Fails with [`DecodeError::TooShort`] unless `b[offset..]` holds `needed` bytes.
pub(crate) fn need(
    b: &[u8],
    what: &'static str,
    offset: usize,
    needed: usize,
) -> Result<(), DecodeError> {
    let found = b.len().saturating_sub(offset);
    if found < needed {
        Err(DecodeError::TooShort {
            what,
            offset,
            needed,
            found,
        })
    } else {
        Ok(())
    }
}

/// Fails with [`DecodeError::LengthMismatch`] unless `b` is exactly `expected` bytes.
pub(crate) fn exact(b: &[u8], what: &'static str, expected: usize) -> Result<(), DecodeError> {
    if b.len() < expected {
        return need(b, what, 0, expected);
    }
    if b.len() != expected {
        return Err(DecodeError::LengthMismatch {
            what,
            expected,
            found: b.len(),
        });
    }
    Ok(())
}

/// Splits `count` elements of `elem_size` bytes off `b[offset..]`, checking the count against
/// the bytes present before anything is allocated. `count_offset` is where the count was read.
pub(crate) fn counted<'a>(
    b: &'a [u8],
    what: &'static str,
    count_offset: usize,
    offset: usize,
    count: u64,
    elem_size: usize,
) -> Result<&'a [u8], DecodeError> {
    let remaining = b.len().saturating_sub(offset) as u64;
    let max_fit = remaining / elem_size as u64;
    if count > max_fit {
        return Err(DecodeError::CountTooLarge {
            what,
            offset: count_offset,
            count,
            max_fit,
        });
    }
    // count <= max_fit, so count * elem_size <= remaining fits usize.
    let len = (count as usize).saturating_mul(elem_size);
    Ok(b.get(offset..offset.saturating_add(len)).unwrap_or(&[]))
}
