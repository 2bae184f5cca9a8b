//! Byte layout of the container: file header, chunk header, blob header, index bodies, footer.
//!
//! Pure encoding and parsing, no I/O: every function takes or returns byte slices.

use super::{CorruptionKind, Error, Result};

/// First 8 bytes of every capture (PNG-style: high bit, name, CR LF, ^Z, LF).
pub const FILE_MAGIC: [u8; 8] = *b"\x89VGT\r\n\x1a\n";
/// Major version written; a reader refuses files with a larger major version.
pub const VERSION_MAJOR: u16 = 1;
/// Newest minor version this code reads and writes; minor versions only append fields, kinds
/// and blob codecs. A writer puts 1.2 in the header only when it may write zstd blobs (the one
/// thing 1.2 added) and 1.1 otherwise, so that 1.1 readers read every byte of such files.
pub const VERSION_MINOR: u16 = 2;
/// Minor version of a file that holds nothing added after 1.1 (no zstd blob).
pub(crate) const VERSION_MINOR_WITHOUT_ZSTD: u16 = 1;
/// Length of the file header written by this version.
pub const FILE_HEADER_LEN: usize = 64;
/// Chunk sync marker (the bytes `VGTR` read as a little-endian u32).
pub const CHUNK_SYNC: u32 = 0x5254_4756;
/// Length of a chunk header.
pub const CHUNK_HEADER_LEN: usize = 16;
/// Largest chunk body a reader accepts; larger lengths are treated as corruption.
pub const MAX_CHUNK_BODY: u32 = 256 << 20;
/// Length of the blob body header that precedes the blob data.
pub const BLOB_HEADER_LEN: usize = 32;
/// Length of the footer at the very end of a finished capture.
pub const FOOTER_LEN: usize = 32;
/// First 8 bytes of the footer.
pub const FOOTER_MAGIC: [u8; 8] = *b"VGTINDEX";
/// Record offsets per index chunk.
pub const INDEX_CHUNK_ENTRIES: u64 = 8192;

/// Kind codes of container-internal chunks (codes `>= 0x0100`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkKind;

impl ChunkKind {
    /// A content-addressed payload.
    pub const BLOB: u16 = 0x0100;
    /// Up to [`INDEX_CHUNK_ENTRIES`] record offsets.
    pub const INDEX_CHUNK: u16 = 0x0101;
    /// The index root the footer points to.
    pub const INDEX_ROOT: u16 = 0x0102;
}

/// The decoded file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FileHeader {
    /// Major format version.
    pub version_major: u16,
    /// Minor format version.
    pub version_minor: u16,
    /// Header length; chunks start here.
    pub header_len: u32,
    /// Header flags (none defined; 0).
    pub flags: u32,
    /// Wall clock when the file was created (Unix epoch nanoseconds).
    pub created_unix_ns: u64,
}

impl FileHeader {
    /// The header this version writes.
    pub fn new(created_unix_ns: u64) -> Self {
        FileHeader {
            version_major: VERSION_MAJOR,
            version_minor: VERSION_MINOR,
            header_len: FILE_HEADER_LEN as u32,
            flags: 0,
            created_unix_ns,
        }
    }

    /// The 64 header bytes, CRC included.
    pub fn encode(&self) -> [u8; FILE_HEADER_LEN] {
        let mut b = [0u8; FILE_HEADER_LEN];
        b[0..8].copy_from_slice(&FILE_MAGIC);
        b[8..10].copy_from_slice(&self.version_major.to_le_bytes());
        b[10..12].copy_from_slice(&self.version_minor.to_le_bytes());
        b[12..16].copy_from_slice(&self.header_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.flags.to_le_bytes());
        b[20..28].copy_from_slice(&self.created_unix_ns.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses a complete 64-byte header whose magic has been checked. `Ok(None)` means the CRC
    /// does not match (the caller reports it and falls back to defaults).
    pub(crate) fn parse(b: &[u8; FILE_HEADER_LEN]) -> Option<FileHeader> {
        let stored = le_u32(b, 60);
        if !crc_matches(crc32c::crc32c(&b[0..60]), stored) {
            return None;
        }
        Some(FileHeader {
            version_major: le_u16(b, 8),
            version_minor: le_u16(b, 10),
            header_len: le_u32(b, 12),
            flags: le_u32(b, 16),
            created_unix_ns: le_u64(b, 20),
        })
    }
}

/// A parsed chunk header (CRC not yet checked: it covers the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkHeader {
    pub kind: u16,
    pub flags: u16,
    pub body_len: u32,
    pub crc: u32,
}

impl ChunkHeader {
    /// Parses 16 bytes; `None` when the sync marker is wrong or the length impossible.
    pub fn parse(b: &[u8]) -> Option<ChunkHeader> {
        if b.len() < CHUNK_HEADER_LEN || le_u32(b, 0) != CHUNK_SYNC {
            return None;
        }
        let h = ChunkHeader {
            kind: le_u16(b, 4),
            flags: le_u16(b, 6),
            body_len: le_u32(b, 8),
            crc: le_u32(b, 12),
        };
        (h.body_len <= MAX_CHUNK_BODY).then_some(h)
    }

    /// Total chunk length, header included.
    pub fn total_len(&self) -> u64 {
        CHUNK_HEADER_LEN as u64 + u64::from(self.body_len)
    }

    /// True when `body` matches the CRC.
    pub fn check(&self, body: &[u8]) -> bool {
        crc_matches(
            chunk_crc(self.kind, self.flags, self.body_len, body),
            self.crc,
        )
    }

    /// True for record chunks (which are numbered), false for internal ones.
    pub fn is_record(&self) -> bool {
        self.kind < crate::record::RecordKind::FIRST_INTERNAL
    }
}

/// Whether a stored CRC matches the one computed. Fuzzing builds (cargo-fuzz sets `--cfg
/// fuzzing`) take any CRC, so that mutated inputs reach the decoders behind the checks instead
/// of stopping at them; every other build compares.
#[inline]
pub(crate) fn crc_matches(computed: u32, stored: u32) -> bool {
    computed == stored || cfg!(fuzzing)
}

/// CRC-32C over kind, flags, body_len (as stored) and the body.
pub(crate) fn chunk_crc(kind: u16, flags: u16, body_len: u32, body: &[u8]) -> u32 {
    let mut pre = [0u8; 8];
    pre[0..2].copy_from_slice(&kind.to_le_bytes());
    pre[2..4].copy_from_slice(&flags.to_le_bytes());
    pre[4..8].copy_from_slice(&body_len.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&pre), body)
}

/// Writes a chunk header for `body` (which must already be complete) into `out[0..16]`.
pub(crate) fn encode_chunk_header(kind: u16, body: &[u8]) -> [u8; CHUNK_HEADER_LEN] {
    let body_len = body.len() as u32;
    let mut h = [0u8; CHUNK_HEADER_LEN];
    put_chunk_header(&mut h, kind, body_len, chunk_crc(kind, 0, body_len, body));
    h
}

/// Puts the 8 bytes the chunk CRC starts with (kind, flags 0, body_len) in `chunk[8..16]`,
/// right before the body at [`CHUNK_HEADER_LEN`], so that one CRC call over `chunk[8..]`
/// covers them and the body; [`put_chunk_header`] then writes the real header over them.
pub(crate) fn put_crc_prefix(chunk: &mut [u8], kind: u16, body_len: u32) {
    chunk[8..10].copy_from_slice(&kind.to_le_bytes());
    chunk[10..12].fill(0);
    chunk[12..16].copy_from_slice(&body_len.to_le_bytes());
}

/// Writes a chunk header (flags 0) into `chunk[0..16]`.
pub(crate) fn put_chunk_header(chunk: &mut [u8], kind: u16, body_len: u32, crc: u32) {
    chunk[0..4].copy_from_slice(&CHUNK_SYNC.to_le_bytes());
    chunk[4..6].copy_from_slice(&kind.to_le_bytes());
    chunk[6..8].fill(0);
    chunk[8..12].copy_from_slice(&body_len.to_le_bytes());
    chunk[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// Fills in the header of a chunk laid out in `chunk`: [`CHUNK_HEADER_LEN`] bytes of room,
/// then the complete body. The same bytes as [`encode_chunk_header`], with the CRC taken in
/// one pass: kind, flags and body_len are put in the header's last 8 bytes, right before the
/// body, and overwritten once the CRC is known. For the small records most of a capture is
/// made of, the CRC routine's cost per call outweighs its cost per byte, so one call instead
/// of two takes about a third off the record's CRC (docs/BENCHMARKS.md).
pub(crate) fn seal_chunk(kind: u16, chunk: &mut [u8]) {
    let body_len = (chunk.len() - CHUNK_HEADER_LEN) as u32;
    put_crc_prefix(chunk, kind, body_len);
    let crc = crc32c::crc32c(&chunk[8..]);
    put_chunk_header(chunk, kind, body_len, crc);
}

/// Blob codec: bytes stored as they are.
pub(crate) const CODEC_STORED: u8 = 0;
/// Blob codec: lz4 block format (lz4_flex).
pub(crate) const CODEC_LZ4: u8 = 1;
/// Blob codec: one zstd frame (format 1.2).
pub(crate) const CODEC_ZSTD: u8 = 2;
/// lz4 expands at most ~255:1; a larger claimed raw length is damage and must not drive an
/// allocation.
pub(crate) fn lz4_len_plausible(raw_len: u64, data_len: u64) -> bool {
    raw_len <= data_len.saturating_mul(255) + 64
}

/// zstd expands at most 32768:1 (an RLE block: a 3-byte header and one byte for 128 KiB);
/// a larger claimed raw length is damage and must not drive an allocation.
pub(crate) fn zstd_len_plausible(raw_len: u64, data_len: u64) -> bool {
    raw_len <= data_len.saturating_mul(32 * 1024)
}

thread_local! {
    /// One zstd decompression context per reading thread, made on first use and reused for
    /// every blob after.
    static ZSTD_DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decodes the zstd data of a blob into `out`, whose length is the blob's raw length: nothing
/// beyond `out` is allocated, and data that would decode to more bytes fails. Returns the
/// number of bytes decoded; on failure, what is wrong in words.
pub(crate) fn zstd_decode_into(data: &[u8], out: &mut [u8]) -> std::result::Result<usize, String> {
    let raw_len = out.len() as u64;
    match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(Some(n)) if n != raw_len => {
            return Err(format!(
                "zstd frame says it holds {n} bytes, the blob header says {raw_len}"
            ));
        }
        Ok(_) => {}
        Err(_) => return Err("zstd data does not start with a valid frame header".into()),
    }
    ZSTD_DCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        let dctx = match &mut *slot {
            Some(d) => d,
            None => slot.insert(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| format!("no zstd decompression context: {e}"))?,
            ),
        };
        dctx.decompress_to_buffer(data, out).map_err(|e| {
            if e.to_string().contains("too small") {
                format!("zstd data decodes to more than the blob's raw length of {raw_len} bytes")
            } else {
                format!("zstd data does not decode: {e}")
            }
        })
    })
}

/// The 32-byte header at the start of a blob body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlobHeader {
    pub hash: u128,
    pub raw_len: u64,
    pub codec: u8,
}

impl BlobHeader {
    pub fn encode(&self) -> [u8; BLOB_HEADER_LEN] {
        let mut b = [0u8; BLOB_HEADER_LEN];
        b[0..16].copy_from_slice(&self.hash.to_le_bytes());
        b[16..24].copy_from_slice(&self.raw_len.to_le_bytes());
        b[24] = self.codec;
        b
    }

    pub fn parse(b: &[u8]) -> Option<BlobHeader> {
        if b.len() < BLOB_HEADER_LEN {
            return None;
        }
        Some(BlobHeader {
            hash: le_u128(b, 0),
            raw_len: le_u64(b, 16),
            codec: b[24],
        })
    }
}

/// Decodes a verified blob chunk body (header + data) into the raw bytes and checks the hash.
/// `offset` is the chunk's file offset, for errors.
pub(crate) fn decode_blob(offset: u64, body: &[u8]) -> Result<Vec<u8>> {
    let corrupt = |kind, detail: String| Error::Corrupt {
        offset,
        kind,
        detail,
    };
    let h = BlobHeader::parse(body).ok_or_else(|| {
        corrupt(
            CorruptionKind::BlobHash,
            format!(
                "blob body of {} bytes is shorter than its header",
                body.len()
            ),
        )
    })?;
    let data = &body[BLOB_HEADER_LEN..];
    let raw = match h.codec {
        CODEC_STORED => data.to_vec(),
        CODEC_LZ4 => {
            if !lz4_len_plausible(h.raw_len, data.len() as u64) {
                return Err(corrupt(
                    CorruptionKind::BlobDecode,
                    format!("blob raw length {} is impossible", h.raw_len),
                ));
            }
            let mut out = vec![0u8; h.raw_len as usize];
            let n = lz4_flex::block::decompress_into(data, &mut out).map_err(|e| {
                corrupt(
                    CorruptionKind::BlobDecode,
                    format!("lz4 data does not decode: {e}"),
                )
            })?;
            out.truncate(n);
            out
        }
        CODEC_ZSTD => {
            if !zstd_len_plausible(h.raw_len, data.len() as u64) {
                return Err(corrupt(
                    CorruptionKind::BlobDecode,
                    format!(
                        "blob raw length {} is impossible for {} bytes of zstd data",
                        h.raw_len,
                        data.len()
                    ),
                ));
            }
            let mut out = vec![0u8; h.raw_len as usize];
            let n = zstd_decode_into(data, &mut out)
                .map_err(|detail| corrupt(CorruptionKind::BlobDecode, detail))?;
            out.truncate(n);
            out
        }
        other => {
            return Err(corrupt(
                CorruptionKind::BlobDecode,
                format!(
                    "unknown blob codec {other} (this reader knows 0 stored, 1 lz4 and 2 zstd; \
                     a newer writer may have made the file)"
                ),
            ));
        }
    };
    if raw.len() as u64 != h.raw_len {
        return Err(corrupt(
            CorruptionKind::BlobHash,
            format!(
                "blob decoded to {} bytes, header says {}",
                raw.len(),
                h.raw_len
            ),
        ));
    }
    let found = crate::hash::content_hash(&raw);
    if found != h.hash {
        return Err(corrupt(
            CorruptionKind::BlobHash,
            format!("blob hash expected {:032x}, found {found:032x}", h.hash),
        ));
    }
    Ok(raw)
}

/// The decoded footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footer {
    pub root_offset: u64,
    pub record_count: u64,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[0..8].copy_from_slice(&FOOTER_MAGIC);
        b[8..16].copy_from_slice(&self.root_offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.record_count.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// `None` unless magic and CRC match.
    pub fn parse(b: &[u8]) -> Option<Footer> {
        if b.len() != FOOTER_LEN || b[0..8] != FOOTER_MAGIC {
            return None;
        }
        if !crc_matches(crc32c::crc32c(&b[0..28]), le_u32(b, 28)) {
            return None;
        }
        Some(Footer {
            root_offset: le_u64(b, 8),
            record_count: le_u64(b, 16),
        })
    }
}

/// The decoded index root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexRoot {
    pub record_count: u64,
    pub chunk_offsets: Vec<u64>,
    pub frames: Vec<u64>,
    pub per_kind: Vec<(u16, u64)>,
    pub raw_payload_bytes: u64,
    pub stored_bytes: u64,
    pub blobs: u64,
    pub dedup_hits: u64,
    pub end_of_data: u64,
}

impl IndexRoot {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(
            64 + 8 * (self.chunk_offsets.len() + self.frames.len()) + 16 * self.per_kind.len(),
        );
        b.extend_from_slice(&self.record_count.to_le_bytes());
        b.extend_from_slice(&(self.chunk_offsets.len() as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for o in &self.chunk_offsets {
            b.extend_from_slice(&o.to_le_bytes());
        }
        b.extend_from_slice(&(self.frames.len() as u64).to_le_bytes());
        for f in &self.frames {
            b.extend_from_slice(&f.to_le_bytes());
        }
        b.extend_from_slice(&(self.per_kind.len() as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for (kind, count) in &self.per_kind {
            b.extend_from_slice(&kind.to_le_bytes());
            b.extend_from_slice(&[0u8; 6]);
            b.extend_from_slice(&count.to_le_bytes());
        }
        for v in [
            self.raw_payload_bytes,
            self.stored_bytes,
            self.blobs,
            self.dedup_hits,
            self.end_of_data,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Parses a CRC-verified root body; `None` when it is inconsistent.
    pub fn parse(b: &[u8]) -> Option<IndexRoot> {
        let mut r = Cursor { b, pos: 0 };
        let record_count = r.u64()?;
        let chunk_count = r.u32()? as usize;
        r.u32()?;
        let chunk_offsets = r.u64s(chunk_count)?;
        let frame_count = usize::try_from(r.u64()?).ok()?;
        let frames = r.u64s(frame_count)?;
        let kind_count = r.u32()? as usize;
        r.u32()?;
        if kind_count > b.len() / 16 {
            return None;
        }
        let mut per_kind = Vec::with_capacity(kind_count);
        for _ in 0..kind_count {
            let kind = r.u16()?;
            r.take(6)?;
            per_kind.push((kind, r.u64()?));
        }
        Some(IndexRoot {
            record_count,
            chunk_offsets,
            frames,
            per_kind,
            raw_payload_bytes: r.u64()?,
            stored_bytes: r.u64()?,
            blobs: r.u64()?,
            dedup_hits: r.u64()?,
            end_of_data: r.u64()?,
        })
    }
}

/// Body of an index chunk: `first_record u64 | count u32 | reserved u32 | offsets`.
pub(crate) fn encode_index_chunk(first_record: u64, offsets: &[u64]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + 8 * offsets.len());
    b.extend_from_slice(&first_record.to_le_bytes());
    b.extend_from_slice(&(offsets.len() as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for o in offsets {
        b.extend_from_slice(&o.to_le_bytes());
    }
    b
}

/// Parses an index chunk body into `(first_record, offsets)`.
pub(crate) fn parse_index_chunk(b: &[u8]) -> Option<(u64, Vec<u64>)> {
    let mut r = Cursor { b, pos: 0 };
    let first = r.u64()?;
    let count = r.u32()? as usize;
    r.u32()?;
    Some((first, r.u64s(count)?))
}

/// A bounds-checked little-endian reader over a slice.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(le_u16(self.take(2)?, 0))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(le_u32(self.take(4)?, 0))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(le_u64(self.take(8)?, 0))
    }
    fn u64s(&mut self, n: usize) -> Option<Vec<u64>> {
        let bytes = self.take(n.checked_mul(8)?)?;
        Some(bytes.chunks_exact(8).map(|c| le_u64(c, 0)).collect())
    }
}

// The helpers below are only called with ranges the caller has bounds-checked.
pub(crate) fn le_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
pub(crate) fn le_u128(b: &[u8], at: usize) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    u128::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-32C bit by bit from its definition (reflected polynomial 0x82F63B78), independent
    /// of the crc32c crate.
    fn reference_crc32c(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn sealed_chunk_has_the_header_of_encode_chunk_header_and_the_crc_of_the_definition() {
        // Every body length up to a few records and every alignment of the buffer, since
        // the CRC routine treats unaligned heads and tails apart.
        let bytes: Vec<u8> = (0..600u32).map(|i| (i * 131 + 7) as u8).collect();
        for len in (0..300).chain([511, 512, 513]) {
            for align in 0..8 {
                let body = &bytes[align..align + len];
                let mut chunk = vec![0xAA; align];
                chunk.extend_from_slice(&[0xEE; CHUNK_HEADER_LEN]);
                chunk.extend_from_slice(body);
                seal_chunk(0x0003, &mut chunk[align..]);
                let head = &chunk[align..align + CHUNK_HEADER_LEN];
                assert_eq!(
                    head,
                    encode_chunk_header(0x0003, body),
                    "len {len} align {align}"
                );
                let mut covered = head[4..12].to_vec();
                covered.extend_from_slice(body);
                assert_eq!(le_u32(head, 12), reference_crc32c(&covered));
                assert_eq!(&chunk[align + CHUNK_HEADER_LEN..], body);
                assert!(ChunkHeader::parse(head).is_some_and(|h| h.check(body)));
            }
        }
    }
}
