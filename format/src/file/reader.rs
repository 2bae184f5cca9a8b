//! The capture reader: indexed or scanned record table, random and sequential access, blobs,
//! health and verification.

use std::borrow::Cow;
use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

use super::format::{
    BLOB_HEADER_LEN, BlobHeader, CHUNK_HEADER_LEN, CHUNK_SYNC, CODEC_LZ4, CODEC_STORED, CODEC_ZSTD,
    ChunkHeader, ChunkKind, FILE_HEADER_LEN, FILE_MAGIC, FOOTER_LEN, FOOTER_MAGIC, FileHeader,
    Footer, INDEX_CHUNK_ENTRIES, IndexRoot, VERSION_MAJOR, VERSION_MINOR, chunk_crc, crc_matches,
    decode_blob, lz4_len_plausible, parse_index_chunk, zstd_decode_into, zstd_len_plausible,
};
use super::source::{Counters, Source, WINDOW, Window};
use super::{
    Corruption, CorruptionKind, Error, Health, IndexStats, Result, VerifyReport, WriterStats, codec,
};
use crate::record::{Payload, Record, RecordId, RecordKind};

/// Index chunks kept in memory at once.
const INDEX_CACHE_CHUNKS: usize = 8;

/// Reads a capture file.
///
/// Opening a finished capture reads only its header, footer and index root; index chunks are
/// loaded when a record is asked for. A capture without a valid index (cut off, or its writer
/// crashed) is scanned once at open to rebuild the record table. `CaptureReader` is `Send` and
/// `Sync`; every method takes `&self`.
#[derive(Debug)]
pub struct CaptureReader {
    src: Source,
    header: FileHeader,
    health: Health,
    table: Table,
    cache: Mutex<Vec<(u64, Arc<Vec<u64>>)>>,
    /// Record offsets rebuilt by a scan when an index chunk turns out to be damaged.
    fallback: OnceLock<Option<Vec<u64>>>,
    counters: Counters,
}

#[derive(Debug)]
enum Table {
    Indexed(IndexRoot),
    Scanned { offsets: Vec<u64>, frames: Vec<u64> },
}

/// Read activity of a [`CaptureReader`], for diagnostics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoStats {
    /// Positioned reads issued.
    pub reads: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Index chunks loaded from the file (cache misses).
    pub index_chunks_loaded: u64,
}

impl CaptureReader {
    /// Opens the capture at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Io { offset: 0, source })?;
        let len = file
            .metadata()
            .map_err(|source| Error::Io { offset: 0, source })?
            .len();
        Self::from_source(Source::File { file, len }, true)
    }

    /// Opens the capture at `path` by scanning it, ignoring any index (for recovery tools and
    /// for comparing the index with the file).
    pub fn open_scanning(path: impl AsRef<Path>) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Io { offset: 0, source })?;
        let len = file
            .metadata()
            .map_err(|source| Error::Io { offset: 0, source })?
            .len();
        Self::from_source(Source::File { file, len }, false)
    }

    /// Opens a capture held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::from_source(Source::Bytes(bytes), true)
    }

    fn from_source(src: Source, use_index: bool) -> Result<Self> {
        let mut reader = CaptureReader {
            header: FileHeader::new(0),
            health: Health {
                file_len: src.len(),
                ..Health::default()
            },
            src,
            table: Table::Scanned {
                offsets: Vec::new(),
                frames: Vec::new(),
            },
            cache: Mutex::new(Vec::new()),
            fallback: OnceLock::new(),
            counters: Counters::default(),
        };
        let Some(start) = reader.read_header()? else {
            return Ok(reader);
        };
        let index = if use_index {
            reader.open_index(start)
        } else {
            Err(None)
        };
        match index {
            Ok(root) => {
                reader.health.indexed = true;
                reader.health.recovered_records = root.record_count;
                reader.table = Table::Indexed(root);
            }
            Err(problem) => {
                if let Some(c) = problem {
                    reader.health.corrupt.push(c);
                }
                let scan = reader.walk(start, false, |_, _| {})?;
                reader.health.truncated_at = scan.truncated_at;
                reader.health.zero_tail = scan.zero_tail;
                for c in scan.corrupt {
                    if !reader.health.corrupt.iter().any(|x| x.offset == c.offset) {
                        reader.health.corrupt.push(c);
                    }
                }
                reader.health.recovered_records = scan.records.len() as u64;
                reader.table = Table::Scanned {
                    offsets: scan.records,
                    frames: scan.frames,
                };
            }
        }
        Ok(reader)
    }

    /// Reads and checks the file header. Returns where chunks start, or `None` for a file cut
    /// inside its header (an empty, truncated capture).
    fn read_header(&mut self) -> Result<Option<u64>> {
        let file_len = self.src.len();
        let n = file_len.min(FILE_HEADER_LEN as u64) as usize;
        let mut b = [0u8; FILE_HEADER_LEN];
        self.src.read_exact_at(&mut b[..n], 0, &self.counters)?;
        let magic_n = n.min(FILE_MAGIC.len());
        if n < FILE_HEADER_LEN {
            if b[..magic_n] == FILE_MAGIC[..magic_n] && header_prefix_plausible(&b[..n]) {
                self.health.truncated_at = Some(0);
                return Ok(None);
            }
            return Err(not_a_capture(&b[..magic_n]));
        }
        if b[..8] != FILE_MAGIC {
            if b.iter().all(|x| *x == 0) && self.zeros_from(&mut None)? == 0 {
                // Space a crash-safe writer reserved before it could copy the header in.
                self.health.truncated_at = Some(0);
                self.health.zero_tail = file_len;
                return Ok(None);
            }
            // A damaged magic is still a capture when a valid chunk follows the header.
            if self.valid_chunk_at(FILE_HEADER_LEN as u64) {
                self.health.corrupt.push(Corruption {
                    offset: 0,
                    kind: CorruptionKind::HeaderChecksum,
                    detail: format!(
                        "file magic is {:02x?}, expected {FILE_MAGIC:02x?}; header ignored",
                        &b[..8]
                    ),
                });
                return Ok(Some(FILE_HEADER_LEN as u64));
            }
            return Err(not_a_capture(&b[..8]));
        }
        match FileHeader::parse(&b) {
            Some(h) => {
                if h.version_major > VERSION_MAJOR {
                    return Err(Error::UnsupportedVersion {
                        found_major: h.version_major,
                        found_minor: h.version_minor,
                        supported_major: VERSION_MAJOR,
                    });
                }
                if (h.header_len as usize) < FILE_HEADER_LEN {
                    return Err(Error::Corrupt {
                        offset: 0,
                        kind: CorruptionKind::HeaderChecksum,
                        detail: format!("header_len {} is below {FILE_HEADER_LEN}", h.header_len),
                    });
                }
                self.header = h;
                let start = u64::from(h.header_len);
                if start > file_len {
                    self.health.truncated_at = Some(0);
                    return Ok(None);
                }
                Ok(Some(start))
            }
            None => {
                self.health.corrupt.push(Corruption {
                    offset: 0,
                    kind: CorruptionKind::HeaderChecksum,
                    detail: format!(
                        "file header CRC does not match; assuming version \
                         {VERSION_MAJOR}.{VERSION_MINOR}"
                    ),
                });
                self.header = FileHeader {
                    version_major: VERSION_MAJOR,
                    version_minor: VERSION_MINOR,
                    header_len: FILE_HEADER_LEN as u32,
                    flags: 0,
                    created_unix_ns: 0,
                };
                Ok(Some(FILE_HEADER_LEN as u64))
            }
        }
    }

    /// Reads the footer and index root. `Err(None)`: there is no index; `Err(Some(c))`: there
    /// is one but it is damaged.
    fn open_index(&self, start: u64) -> Result<IndexRoot, Option<Corruption>> {
        let file_len = self.src.len();
        if file_len < start + FOOTER_LEN as u64 {
            return Err(None);
        }
        let footer_at = file_len - FOOTER_LEN as u64;
        let mut fb = [0u8; FOOTER_LEN];
        self.src
            .read_exact_at(&mut fb, footer_at, &self.counters)
            .map_err(|_| None)?;
        let footer = match Footer::parse(&fb) {
            Some(f) => f,
            None if fb[..8] == FOOTER_MAGIC => {
                return Err(Some(Corruption {
                    offset: footer_at,
                    kind: CorruptionKind::Footer,
                    detail: "footer CRC does not match".into(),
                }));
            }
            None => return Err(None),
        };
        let bad = |detail: String| {
            Some(Corruption {
                offset: footer.root_offset,
                kind: CorruptionKind::Index,
                detail,
            })
        };
        if footer.root_offset < start || footer.root_offset >= footer_at {
            return Err(Some(Corruption {
                offset: footer_at,
                kind: CorruptionKind::Footer,
                detail: format!("root offset {} is outside the file", footer.root_offset),
            }));
        }
        let (h, body) = self
            .read_chunk(footer.root_offset)
            .map_err(|e| bad(e.to_string()))?;
        if h.kind != ChunkKind::INDEX_ROOT {
            return Err(bad(format!(
                "chunk kind {:#06x} is not an index root",
                h.kind
            )));
        }
        let root =
            IndexRoot::parse(&body).ok_or_else(|| bad("index root does not parse".into()))?;
        let chunks_needed = root.record_count.div_ceil(INDEX_CHUNK_ENTRIES);
        if root.record_count != footer.record_count
            || root.chunk_offsets.len() as u64 != chunks_needed
            || root.end_of_data > footer.root_offset
            || root
                .chunk_offsets
                .iter()
                .any(|o| *o >= footer.root_offset || *o < start)
        {
            return Err(bad(format!(
                "index root inconsistent: {} records (footer says {}), {} index chunks",
                root.record_count,
                footer.record_count,
                root.chunk_offsets.len()
            )));
        }
        Ok(root)
    }

    /// The file header.
    pub fn header(&self) -> &FileHeader {
        &self.header
    }

    /// What was found at open: indexed or scanned, truncation, damage.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Number of records.
    pub fn len(&self) -> u64 {
        match &self.table {
            Table::Indexed(root) => root.record_count,
            Table::Scanned { offsets, .. } => offsets.len() as u64,
        }
    }

    /// True when the capture holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Read counters since open.
    pub fn io_stats(&self) -> IoStats {
        IoStats {
            reads: self.counters.reads.load(Ordering::Relaxed),
            bytes: self.counters.bytes.load(Ordering::Relaxed),
            index_chunks_loaded: self.counters.index_chunks.load(Ordering::Relaxed),
        }
    }

    /// Counts from the index root; `None` for a capture without a valid index.
    pub fn index_stats(&self) -> Option<IndexStats> {
        let Table::Indexed(root) = &self.table else {
            return None;
        };
        Some(IndexStats {
            records: root.record_count,
            per_kind: root
                .per_kind
                .iter()
                .map(|(k, n)| (RecordKind(*k), *n))
                .collect(),
            frames: root.frames.len() as u64,
            payloads: WriterStats {
                records: root.record_count,
                blobs: root.blobs,
                dedup_hits: root.dedup_hits,
                raw_payload_bytes: root.raw_payload_bytes,
                stored_bytes: root.stored_bytes,
                file_bytes: root.end_of_data,
            },
        })
    }

    /// Ids of every frame record, in order.
    pub fn frames(&self) -> Result<Vec<RecordId>> {
        Ok(match &self.table {
            Table::Indexed(root) => root.frames.clone(),
            Table::Scanned { frames, .. } => frames.clone(),
        })
    }

    /// File offset of record `id`'s chunk.
    pub fn record_offset(&self, id: RecordId) -> Result<u64> {
        let len = self.len();
        if id >= len {
            return Err(Error::NoSuchRecord { id, len });
        }
        match &self.table {
            Table::Scanned { offsets, .. } => Ok(offsets[id as usize]),
            Table::Indexed(_) => {
                let chunk = self.index_chunk(id / INDEX_CHUNK_ENTRIES)?;
                Ok(chunk[(id % INDEX_CHUNK_ENTRIES) as usize])
            }
        }
    }

    /// Record `id`.
    pub fn record(&self, id: RecordId) -> Result<Record> {
        let offset = self.record_offset(id)?;
        let (h, body) = self.read_chunk(offset)?;
        decode_record(offset, &h, &body)
    }

    /// Every record in order. A damaged record yields an `Err` and iteration goes on.
    pub fn iter(&self) -> RecordIter<'_> {
        self.iter_range(0..self.len())
    }

    /// Records `range.start..range.end` (clamped to the capture) in order.
    pub fn iter_range(&self, range: Range<RecordId>) -> RecordIter<'_> {
        let end = range.end.min(self.len());
        RecordIter {
            reader: self,
            next: range.start.min(end),
            end,
            window: Window::default(),
            chunk: None,
            prev_end: None,
        }
    }

    /// The bytes of a payload: borrowed when inline, read, decompressed and hash-checked when a
    /// blob.
    pub fn read_payload<'p>(&self, payload: &'p Payload) -> Result<Cow<'p, [u8]>> {
        match payload {
            Payload::Inline(b) => Ok(Cow::Borrowed(b)),
            Payload::Blob(_) => {
                let mut out = Vec::new();
                self.read_payload_into(payload, &mut out)?;
                Ok(Cow::Owned(out))
            }
        }
    }

    /// Like [`CaptureReader::read_payload`], into a caller's buffer: `out` is cleared and holds
    /// exactly the payload's bytes afterwards (its allocation is reused, so a caller reading
    /// payload after payload into the same buffers allocates nothing once they are large
    /// enough). Blob checks are the same: chunk CRC, blob header, decompression, and the
    /// XXH3-128 of the bytes against both the blob header and the reference (hashed once).
    /// A stored blob is read straight into `out`; a compressed one is decompressed into it
    /// from the file's bytes without an intermediate copy when the capture is in memory. On
    /// error `out`'s content is unspecified.
    pub fn read_payload_into(&self, payload: &Payload, out: &mut Vec<u8>) -> Result<()> {
        let r = match payload {
            Payload::Inline(b) => {
                out.clear();
                out.extend_from_slice(b);
                return Ok(());
            }
            Payload::Blob(r) => r,
        };
        if self.read_blob_fast(r, out, true).is_ok() {
            return Ok(());
        }
        // Something is wrong with this blob: the step-by-step path says what, exactly as it
        // always has (damage is rare; its cost does not matter).
        let bytes = self.read_blob_checked(r)?;
        out.clear();
        out.extend_from_slice(&bytes);
        Ok(())
    }

    /// Like [`CaptureReader::read_payload_into`] except for the content hash, which is left to
    /// the caller: the chunk CRC, the blob header (its length and hash fields must equal the
    /// reference's) and the decompression are checked, the XXH3-128 of the bytes is not.
    ///
    /// Only for a caller that verifies the same content hash itself, before it uses the bytes:
    /// it must check [`content_hash(out)`](crate::hash::content_hash) `== hash` for the reference's hash (for example on another
    /// thread, to spread the work) and, when they differ, call
    /// [`CaptureReader::read_payload`] for the precise error. Inline payloads carry no hash
    /// and are simply copied.
    pub fn read_payload_into_unhashed(&self, payload: &Payload, out: &mut Vec<u8>) -> Result<()> {
        let r = match payload {
            Payload::Inline(_) => return self.read_payload_into(payload, out),
            Payload::Blob(r) => r,
        };
        if self.read_blob_fast(r, out, false).is_ok() {
            return Ok(());
        }
        let bytes = self.read_blob_checked(r)?;
        out.clear();
        out.extend_from_slice(&bytes);
        Ok(())
    }

    /// The blob read in one pass: chunk and blob headers, then the data straight into `out`
    /// (stored) or decompressed into it (lz4, zstd), CRC over the body, one XXH3-128 (when `hash`;
    /// otherwise the caller checks it). Any failure is reported by
    /// [`CaptureReader::read_blob_checked`], so its error is not meant for users.
    fn read_blob_fast(
        &self,
        r: &crate::record::BlobRef,
        out: &mut Vec<u8>,
        hash: bool,
    ) -> Result<()> {
        let damaged = || Error::Corrupt {
            offset: r.offset,
            kind: CorruptionKind::BlobHash,
            detail: String::new(),
        };
        let mut heads = [0u8; CHUNK_HEADER_LEN + BLOB_HEADER_LEN];
        self.src
            .read_exact_at(&mut heads, r.offset, &self.counters)?;
        let h = ChunkHeader::parse(&heads).ok_or_else(damaged)?;
        let blob_head = &heads[CHUNK_HEADER_LEN..];
        if h.kind != ChunkKind::BLOB || (h.body_len as usize) < BLOB_HEADER_LEN {
            return Err(damaged());
        }
        let b = BlobHeader::parse(blob_head).ok_or_else(damaged)?;
        if b.hash != r.hash.0 || b.raw_len != r.len {
            return Err(damaged());
        }
        let data_at = r.offset + (CHUNK_HEADER_LEN + BLOB_HEADER_LEN) as u64;
        let data_len = u64::from(h.body_len) - BLOB_HEADER_LEN as u64;
        if data_len > self.src.len().saturating_sub(data_at) {
            return Err(damaged());
        }
        let crc = chunk_crc(h.kind, h.flags, h.body_len, blob_head);
        match b.codec {
            CODEC_STORED => {
                if data_len != b.raw_len {
                    return Err(damaged());
                }
                out.resize(data_len as usize, 0);
                self.src.read_exact_at(out, data_at, &self.counters)?;
                if !crc_matches(crc32c::crc32c_append(crc, out), h.crc) {
                    return Err(damaged());
                }
            }
            CODEC_LZ4 | CODEC_ZSTD => {
                let plausible = if b.codec == CODEC_LZ4 {
                    lz4_len_plausible(b.raw_len, data_len)
                } else {
                    zstd_len_plausible(b.raw_len, data_len)
                };
                if !plausible {
                    return Err(damaged());
                }
                let owned;
                let data = match self.src.borrow(data_at, data_len, &self.counters) {
                    Some(d) => d?,
                    None => {
                        owned = self.src.read_vec(data_at, data_len, &self.counters)?;
                        &owned[..]
                    }
                };
                if !crc_matches(crc32c::crc32c_append(crc, data), h.crc) {
                    return Err(damaged());
                }
                out.resize(b.raw_len as usize, 0);
                let n = if b.codec == CODEC_LZ4 {
                    lz4_flex::block::decompress_into(data, out).map_err(|_| damaged())?
                } else {
                    zstd_decode_into(data, out).map_err(|_| damaged())?
                };
                if n != out.len() {
                    return Err(damaged());
                }
            }
            _ => return Err(damaged()),
        }
        if hash && crate::hash::content_hash(out) != r.hash.0 {
            return Err(damaged());
        }
        Ok(())
    }

    /// The blob read step by step (whole chunk, CRC, kind, decode, hash), for precise errors.
    fn read_blob_checked(&self, r: &crate::record::BlobRef) -> Result<Vec<u8>> {
        let (h, body) = self.read_chunk(r.offset)?;
        let corrupt = |detail: String| Error::Corrupt {
            offset: r.offset,
            kind: CorruptionKind::BlobHash,
            detail,
        };
        if h.kind != ChunkKind::BLOB {
            return Err(corrupt(format!(
                "blob reference points at a chunk of kind {:#06x}",
                h.kind
            )));
        }
        let raw = decode_blob(r.offset, &body)?;
        let hash = crate::hash::content_hash(&raw);
        if hash != r.hash.0 || raw.len() as u64 != r.len {
            return Err(corrupt(format!(
                "blob holds {} bytes hashing to {hash:032x}; the reference expects {} bytes hashing to {}",
                raw.len(),
                r.len,
                r.hash
            )));
        }
        Ok(raw)
    }

    /// Walks every chunk of the file, checking every CRC, decoding every record and every blob
    /// (hash included), the footer and the index.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let start = u64::from(self.header.header_len).max(FILE_HEADER_LEN as u64);
        if self.health.truncated_at == Some(0) && self.src.len() < start {
            report.truncated_at = Some(0);
            return Ok(report);
        }
        report.corrupt.extend(
            self.health
                .corrupt
                .iter()
                .filter(|c| c.kind == CorruptionKind::HeaderChecksum)
                .cloned(),
        );
        let mut found = Vec::new();
        let scan = self.walk(start, true, |offset, chunk| {
            let WalkChunk::Valid(h, body) = chunk else {
                return;
            };
            report.chunks += 1;
            if h.is_record() {
                report.records += 1;
                if let Err(e) = decode_record(offset, h, body) {
                    found.push(corruption_of(e, offset, CorruptionKind::BadRecord));
                }
            } else if h.kind == ChunkKind::BLOB {
                report.blobs += 1;
                if let Err(e) = decode_blob(offset, body) {
                    found.push(corruption_of(e, offset, CorruptionKind::BlobHash));
                }
            } else if !matches!(h.kind, ChunkKind::INDEX_CHUNK | ChunkKind::INDEX_ROOT) {
                report.unknown_chunks += 1;
            }
        })?;
        report.truncated_at = scan.truncated_at;
        report.corrupt.extend(scan.corrupt);
        report.corrupt.extend(found);
        report.corrupt.sort_by_key(|c| c.offset);
        match &self.table {
            Table::Indexed(root) => {
                let mut index_ok = root.record_count == scan.records.len() as u64;
                for (i, chunk_offset) in root.chunk_offsets.iter().enumerate() {
                    let first = i as u64 * INDEX_CHUNK_ENTRIES;
                    match self.load_index_chunk(i as u64, *chunk_offset) {
                        Ok(entries) => {
                            let want = scan.records.iter().skip(first as usize).take(entries.len());
                            if !entries.iter().eq(want) {
                                index_ok = false;
                                report.corrupt.push(Corruption {
                                    offset: *chunk_offset,
                                    kind: CorruptionKind::Index,
                                    detail: format!(
                                        "index chunk for records {first}.. disagrees with the records found"
                                    ),
                                });
                            }
                        }
                        Err(e) => {
                            index_ok = false;
                            let c = corruption_of(e, *chunk_offset, CorruptionKind::Index);
                            if !report.corrupt.iter().any(|x| x.offset == c.offset) {
                                report.corrupt.push(c);
                            }
                        }
                    }
                }
                report.index_ok = index_ok;
            }
            Table::Scanned { .. } => {
                for c in &self.health.corrupt {
                    if !report.corrupt.iter().any(|x| x.offset == c.offset) {
                        report.corrupt.push(c.clone());
                    }
                }
            }
        }
        report.corrupt.sort_by_key(|c| c.offset);
        Ok(report)
    }

    /// Reads the chunk at `offset` and checks its CRC. Only called for offsets that the index,
    /// a scan or a record said hold a complete chunk, so running past the end of the file is
    /// damage, not truncation.
    fn read_chunk(&self, offset: u64) -> Result<(ChunkHeader, Vec<u8>)> {
        self.read_chunk_inner(offset)
            .map_err(|e| truncation_is_damage(offset, e))
    }

    fn read_chunk_inner(&self, offset: u64) -> Result<(ChunkHeader, Vec<u8>)> {
        let mut hb = [0u8; CHUNK_HEADER_LEN];
        self.src.read_exact_at(&mut hb, offset, &self.counters)?;
        let h = ChunkHeader::parse(&hb).ok_or_else(|| Error::Corrupt {
            offset,
            kind: CorruptionKind::BadFraming,
            detail: format!("no chunk header here: found {hb:02x?}"),
        })?;
        let body = self.src.read_vec(
            offset + CHUNK_HEADER_LEN as u64,
            u64::from(h.body_len),
            &self.counters,
        )?;
        check_chunk(offset, &h, &body)?;
        Ok((h, body))
    }

    /// True when a complete chunk with a valid CRC starts at `offset`.
    fn valid_chunk_at(&self, offset: u64) -> bool {
        self.read_chunk(offset).is_ok()
    }

    /// Offsets of index chunk `n`, cached.
    fn index_chunk(&self, n: u64) -> Result<Arc<Vec<u64>>> {
        let Table::Indexed(root) = &self.table else {
            return Err(Error::NoSuchRecord { id: n, len: 0 });
        };
        if let Ok(cache) = self.cache.lock()
            && let Some((_, c)) = cache.iter().find(|(k, _)| *k == n)
        {
            return Ok(c.clone());
        }
        let offset = root.chunk_offsets[n as usize];
        let entries = match self.load_index_chunk(n, offset) {
            Ok(e) => Arc::new(e),
            Err(e) => {
                // The records may be intact: find them by scanning instead.
                let first = (n * INDEX_CHUNK_ENTRIES) as usize;
                let count = (root.record_count - n * INDEX_CHUNK_ENTRIES).min(INDEX_CHUNK_ENTRIES);
                return match self.fallback_offsets() {
                    Some(all) => Ok(Arc::new(all[first..first + count as usize].to_vec())),
                    None => Err(e),
                };
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= INDEX_CACHE_CHUNKS {
                cache.remove(0);
            }
            cache.push((n, entries.clone()));
        }
        Ok(entries)
    }

    fn load_index_chunk(&self, n: u64, offset: u64) -> Result<Vec<u64>> {
        let Table::Indexed(root) = &self.table else {
            return Ok(Vec::new());
        };
        self.counters.index_chunks.fetch_add(1, Ordering::Relaxed);
        let (h, body) = self.read_chunk(offset)?;
        let first = n * INDEX_CHUNK_ENTRIES;
        let count = (root.record_count - first).min(INDEX_CHUNK_ENTRIES);
        let bad = |detail: String| Error::Corrupt {
            offset,
            kind: CorruptionKind::Index,
            detail,
        };
        if h.kind != ChunkKind::INDEX_CHUNK {
            return Err(bad(format!(
                "chunk kind {:#06x} is not an index chunk",
                h.kind
            )));
        }
        let (got_first, entries) =
            parse_index_chunk(&body).ok_or_else(|| bad("index chunk does not parse".into()))?;
        if got_first != first || entries.len() as u64 != count {
            return Err(bad(format!(
                "index chunk holds records {got_first}+{}, expected {first}+{count}",
                entries.len()
            )));
        }
        Ok(entries)
    }

    /// The record offsets found by scanning, when they agree with the index's record count.
    fn fallback_offsets(&self) -> Option<&Vec<u64>> {
        self.fallback
            .get_or_init(|| {
                let start = u64::from(self.header.header_len).max(FILE_HEADER_LEN as u64);
                let scan = self.walk(start, false, |_, _| {}).ok()?;
                (scan.records.len() as u64 == self.len()).then_some(scan.records)
            })
            .as_ref()
    }

    /// Walks the chunks from `start` to the end, resynchronising after damage.
    ///
    /// With `check_blobs` false, a blob whose framing is intact (a chunk, the footer or the end
    /// of the file follows it) is stepped over without reading its body: its CRC and hash are
    /// checked when it is read, and by [`CaptureReader::verify`]. A crashed capture is mostly
    /// blob bytes, so this is what makes opening one cost the records, not the payloads.
    fn walk(
        &self,
        start: u64,
        check_blobs: bool,
        mut visit: impl FnMut(u64, WalkChunk<'_>),
    ) -> Result<Scan> {
        let src = &self.src;
        let file_len = src.len();
        let mut scan = Scan::default();
        let mut win = Window::default();
        // Start small: the read-ahead grows over runs of records.
        win.jumped();
        let mut pos = start;
        // Where the file's all-zero suffix starts; found only when a chunk does not parse.
        let mut zeros_from = None;
        while pos < file_len {
            let remaining = file_len - pos;
            let head_len = remaining.min(CHUNK_HEADER_LEN as u64);
            let mut head = [0u8; CHUNK_HEADER_LEN];
            head[..head_len as usize].copy_from_slice(win.get(
                src,
                &self.counters,
                pos,
                head_len,
            )?);
            let head = &head[..head_len as usize];
            // The footer, whole or cut.
            let m = head.len().min(FOOTER_MAGIC.len());
            if remaining <= FOOTER_LEN as u64 && head[..m] == FOOTER_MAGIC[..m] {
                if remaining < FOOTER_LEN as u64 {
                    scan.truncated_at = Some(pos);
                } else {
                    let fb = win.get(src, &self.counters, pos, FOOTER_LEN as u64)?;
                    if Footer::parse(fb).is_none() {
                        scan.corrupt.push(Corruption {
                            offset: pos,
                            kind: CorruptionKind::Footer,
                            detail: "footer CRC does not match".into(),
                        });
                    }
                }
                break;
            }
            if ChunkHeader::parse(head).is_none() {
                let z = self.zeros_from(&mut zeros_from)?;
                if z <= pos {
                    // Reserved space a crash-safe writer had not filled: the end of the data.
                    scan.zero_tail = file_len - pos;
                    break;
                }
                let copied = &head[..head.len().min((z - pos) as usize)];
                let m = copied.len().min(FOOTER_MAGIC.len());
                if copied[..m] == FOOTER_MAGIC[..m]
                    && z <= pos + FOOTER_LEN as u64
                    && remaining > FOOTER_LEN as u64
                {
                    // The footer, followed by reserved space the writer had not cut off yet
                    // (finished, then stopped), or cut while it was being copied.
                    let fb = win.get(src, &self.counters, pos, FOOTER_LEN as u64)?;
                    if Footer::parse(fb).is_some() {
                        scan.zero_tail = remaining - FOOTER_LEN as u64;
                    } else if z < pos + FOOTER_LEN as u64 {
                        scan.truncated_at = Some(pos);
                        scan.zero_tail = file_len - z;
                    } else {
                        scan.corrupt.push(Corruption {
                            offset: pos,
                            kind: CorruptionKind::Footer,
                            detail: "footer CRC does not match".into(),
                        });
                    }
                    break;
                }
            }
            if remaining < CHUNK_HEADER_LEN as u64 {
                let sync = CHUNK_SYNC.to_le_bytes();
                let s = head.len().min(4);
                if head[..s] == sync[..s] {
                    scan.truncated_at = Some(pos);
                } else {
                    scan.corrupt.push(Corruption {
                        offset: pos,
                        kind: CorruptionKind::BadFraming,
                        detail: format!("{remaining} trailing bytes are not a chunk"),
                    });
                }
                break;
            }
            // Formatted only on the damage path: this loop runs once per chunk.
            let mut detail = None;
            let mut kind = CorruptionKind::BadFraming;
            if let Some(h) = ChunkHeader::parse(head) {
                let end = pos + h.total_len();
                if !check_blobs
                    && h.kind == ChunkKind::BLOB
                    && end <= file_len
                    && (end == file_len || self.looks_like_chunk(end))
                {
                    win.jumped();
                    pos = end;
                    continue;
                }
                if end <= file_len {
                    let body = win.get(
                        src,
                        &self.counters,
                        pos + CHUNK_HEADER_LEN as u64,
                        u64::from(h.body_len),
                    )?;
                    if h.check(body) {
                        scan.chunk(pos, &h);
                        visit(pos, WalkChunk::Valid(&h, body));
                        pos = end;
                        continue;
                    }
                    if end == file_len || self.looks_like_chunk(end) {
                        scan.corrupt.push(Corruption {
                            offset: pos,
                            kind: CorruptionKind::ChunkChecksum,
                            detail: format!(
                                "CRC of the {}-byte chunk of kind {:#06x} does not match",
                                h.body_len, h.kind
                            ),
                        });
                        // Framing is intact, so the chunk keeps its place in the numbering.
                        if h.is_record() {
                            scan.records.push(pos);
                        }
                        visit(pos, WalkChunk::Damaged);
                        pos = end;
                        continue;
                    }
                    kind = CorruptionKind::ChunkChecksum;
                    detail = Some(format!(
                        "CRC of the chunk of kind {:#06x} does not match and no chunk follows it",
                        h.kind
                    ));
                } else {
                    match self.resync(pos + 1)? {
                        Some(next) => {
                            scan.corrupt.push(Corruption {
                                offset: pos,
                                kind: CorruptionKind::BadFraming,
                                detail: format!(
                                    "chunk length {} runs past the end of the file, but a valid chunk starts at {next}",
                                    h.body_len
                                ),
                            });
                            pos = next;
                            continue;
                        }
                        None => {
                            // The file ends inside the chunk: a cut. Zero bytes there are the
                            // chunk's own (its reserved fields), not padding.
                            scan.truncated_at = Some(pos);
                            break;
                        }
                    }
                }
            }
            let detail =
                detail.unwrap_or_else(|| format!("no chunk header here: found {head:02x?}"));
            match self.resync(pos + 1)? {
                Some(next) => {
                    scan.corrupt.push(Corruption {
                        offset: pos,
                        kind,
                        detail: format!(
                            "{detail}; skipped {} bytes to the next valid chunk",
                            next - pos
                        ),
                    });
                    pos = next;
                }
                None => {
                    let z = self.zeros_from(&mut zeros_from)?;
                    if self.cut_before_zeros(pos, head, z) {
                        // A chunk whose copy into reserved space stopped part-way: a cut.
                        scan.truncated_at = Some(pos);
                        scan.zero_tail = file_len - z;
                        break;
                    }
                    scan.corrupt.push(Corruption {
                        offset: pos,
                        kind,
                        detail: format!("{detail}; no valid chunk in the last {remaining} bytes"),
                    });
                    break;
                }
            }
        }
        Ok(scan)
    }

    /// Where the file's all-zero suffix starts (the file length when its last byte is not
    /// zero), computed once per walk into `cache`.
    fn zeros_from(&self, cache: &mut Option<u64>) -> Result<u64> {
        if let Some(z) = *cache {
            return Ok(z);
        }
        let mut end = self.src.len();
        let mut block = Vec::new();
        let z = loop {
            if end == 0 {
                break 0;
            }
            let n = end.min(WINDOW);
            block.resize(n as usize, 0);
            self.src
                .read_exact_at(&mut block, end - n, &self.counters)?;
            if let Some(i) = block.iter().rposition(|b| *b != 0) {
                break end - n + i as u64 + 1;
            }
            end -= n;
        };
        *cache = Some(z);
        Ok(z)
    }

    /// True when the bytes at `pos` are the start of a chunk whose data stops at `zeros`, the
    /// start of the zero suffix, inside the chunk's own extent, and zeros run on past it: what
    /// a writer leaves that was stopped while copying a chunk into space it had reserved. A
    /// damaged chunk that merely ends the file is not this (nothing follows it).
    fn cut_before_zeros(&self, pos: u64, head: &[u8], zeros: u64) -> bool {
        if zeros <= pos {
            return false;
        }
        let sync = CHUNK_SYNC.to_le_bytes();
        let data = &head[..head.len().min((zeros - pos) as usize)];
        let s = data.len().min(sync.len());
        if data[..s] != sync[..s] {
            return false;
        }
        match ChunkHeader::parse(head) {
            Some(h) => zeros < pos + h.total_len() && pos + h.total_len() < self.src.len(),
            // The header itself stops in its sync marker (or its length is impossible and
            // what was copied of it ends inside the 16 bytes).
            None => zeros - pos < CHUNK_HEADER_LEN as u64,
        }
    }

    /// True when what starts at `offset` looks like the next chunk, the footer, or a cut tail.
    fn looks_like_chunk(&self, offset: u64) -> bool {
        let file_len = self.src.len();
        let remaining = file_len.saturating_sub(offset);
        let n = remaining.min(CHUNK_HEADER_LEN as u64) as usize;
        let mut b = [0u8; CHUNK_HEADER_LEN];
        if self
            .src
            .read_exact_at(&mut b[..n], offset, &self.counters)
            .is_err()
        {
            return false;
        }
        if remaining == FOOTER_LEN as u64 && b[..8] == FOOTER_MAGIC {
            return true;
        }
        if n < CHUNK_HEADER_LEN {
            let sync = CHUNK_SYNC.to_le_bytes();
            let s = n.min(4);
            return b[..s] == sync[..s];
        }
        ChunkHeader::parse(&b).is_some()
    }

    /// The first offset at or after `from` where a complete, CRC-valid chunk (or a valid footer
    /// at the very end) starts.
    fn resync(&self, from: u64) -> Result<Option<u64>> {
        let file_len = self.src.len();
        let sync = CHUNK_SYNC.to_le_bytes();
        let footer_at = file_len
            .checked_sub(FOOTER_LEN as u64)
            .filter(|f| *f >= from);
        let footer_ok = footer_at.is_some_and(|f| {
            self.src
                .read_vec(f, FOOTER_LEN as u64, &self.counters)
                .is_ok_and(|b| Footer::parse(&b).is_some())
        });
        let mut p = from;
        let mut block = Vec::new();
        while p + CHUNK_HEADER_LEN as u64 <= file_len {
            let n = (file_len - p).min(WINDOW);
            block.resize(n as usize, 0);
            self.src.read_exact_at(&mut block, p, &self.counters)?;
            for i in 0..block.len().saturating_sub(3) {
                if block[i..i + 4] == sync {
                    let cand = p + i as u64;
                    if footer_ok && footer_at.is_some_and(|f| cand >= f) {
                        return Ok(footer_at);
                    }
                    if self.valid_chunk_at(cand) {
                        return Ok(Some(cand));
                    }
                }
            }
            if n < WINDOW {
                break;
            }
            p += n - 3;
        }
        Ok(if footer_ok { footer_at } else { None })
    }
}

/// What the walk hands to its visitor.
enum WalkChunk<'a> {
    /// A chunk whose CRC verified.
    Valid(&'a ChunkHeader, &'a [u8]),
    /// A chunk with intact framing whose CRC failed (already in the scan's corruption list).
    Damaged,
}

/// What a walk found.
#[derive(Debug, Default)]
struct Scan {
    records: Vec<u64>,
    frames: Vec<u64>,
    truncated_at: Option<u64>,
    corrupt: Vec<Corruption>,
    /// Length of the all-zero tail that ended the walk (see [`Health::zero_tail`]).
    zero_tail: u64,
}

impl Scan {
    fn chunk(&mut self, offset: u64, h: &ChunkHeader) {
        if h.is_record() {
            if h.kind == RecordKind::FRAME.0 {
                self.frames.push(self.records.len() as u64);
            }
            self.records.push(offset);
        }
    }
}

/// Iterator over records in file order; see [`CaptureReader::iter`].
pub struct RecordIter<'r> {
    reader: &'r CaptureReader,
    next: RecordId,
    end: RecordId,
    window: Window,
    chunk: Option<(u64, Arc<Vec<u64>>)>,
    /// Where the previous record's chunk ended.
    prev_end: Option<u64>,
}

/// A gap between consecutive records (blobs) larger than this makes the file window read
/// little ahead, so that sequential iteration does not read the blobs it steps over.
const SKIP_GAP: u64 = 64 << 10;

impl RecordIter<'_> {
    fn offset(&mut self, id: RecordId) -> Result<u64> {
        match &self.reader.table {
            Table::Scanned { offsets, .. } => Ok(offsets[id as usize]),
            Table::Indexed(_) => {
                let n = id / INDEX_CHUNK_ENTRIES;
                let entries = match &self.chunk {
                    Some((k, e)) if *k == n => e.clone(),
                    _ => {
                        let e = self.reader.index_chunk(n)?;
                        self.chunk = Some((n, e.clone()));
                        e
                    }
                };
                Ok(entries[(id % INDEX_CHUNK_ENTRIES) as usize])
            }
        }
    }

    fn read(&mut self, id: RecordId) -> Result<Record> {
        let offset = self.offset(id)?;
        if self
            .prev_end
            .is_some_and(|end| offset > end.saturating_add(SKIP_GAP))
        {
            self.window.jumped();
        }
        self.prev_end = None;
        self.read_at(offset)
            .map_err(|e| truncation_is_damage(offset, e))
    }

    fn read_at(&mut self, offset: u64) -> Result<Record> {
        let r = self.reader;
        if let Some(hb) = r.src.borrow(offset, CHUNK_HEADER_LEN as u64, &r.counters) {
            // In memory: no window, no copy.
            let hb = hb?;
            let h = ChunkHeader::parse(hb).ok_or_else(|| Error::Corrupt {
                offset,
                kind: CorruptionKind::BadFraming,
                detail: format!("no chunk header here: found {hb:02x?}"),
            })?;
            let body = r
                .src
                .borrow(
                    offset + CHUNK_HEADER_LEN as u64,
                    u64::from(h.body_len),
                    &r.counters,
                )
                .unwrap_or(Ok(&[]))?;
            check_chunk(offset, &h, body)?;
            return decode_record(offset, &h, body);
        }
        let hb = self
            .window
            .get(&r.src, &r.counters, offset, CHUNK_HEADER_LEN as u64)?;
        let h = ChunkHeader::parse(hb).ok_or_else(|| Error::Corrupt {
            offset,
            kind: CorruptionKind::BadFraming,
            detail: format!("no chunk header here: found {hb:02x?}"),
        })?;
        self.prev_end = Some(offset + h.total_len());
        let body = self.window.get(
            &r.src,
            &r.counters,
            offset + CHUNK_HEADER_LEN as u64,
            u64::from(h.body_len),
        )?;
        check_chunk(offset, &h, body)?;
        decode_record(offset, &h, body)
    }
}

impl Iterator for RecordIter<'_> {
    type Item = Result<(RecordId, Record)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let id = self.next;
        self.next += 1;
        Some(self.read(id).map(|r| (id, r)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.end - self.next) as usize;
        (n, Some(n))
    }
}

/// A chunk that the index or a record points at must be complete: running past the end of the
/// file there is damage (a flipped length), not a cut.
fn truncation_is_damage(offset: u64, e: Error) -> Error {
    match e {
        Error::Truncated {
            offset: at,
            needed,
            available,
        } => Error::Corrupt {
            offset,
            kind: CorruptionKind::BadFraming,
            detail: format!(
                "chunk runs past the end of the file: {needed} bytes needed at {at}, {available} there"
            ),
        },
        other => other,
    }
}

fn check_chunk(offset: u64, h: &ChunkHeader, body: &[u8]) -> Result<()> {
    if h.check(body) {
        Ok(())
    } else {
        Err(Error::Corrupt {
            offset,
            kind: CorruptionKind::ChunkChecksum,
            detail: format!(
                "CRC of the {}-byte chunk of kind {:#06x} does not match",
                h.body_len, h.kind
            ),
        })
    }
}

fn decode_record(offset: u64, h: &ChunkHeader, body: &[u8]) -> Result<Record> {
    if !h.is_record() {
        return Err(Error::Corrupt {
            offset,
            kind: CorruptionKind::Index,
            detail: format!("expected a record chunk, found kind {:#06x}", h.kind),
        });
    }
    codec::decode_body(h.kind, body).map_err(|detail| Error::Corrupt {
        offset,
        kind: CorruptionKind::BadRecord,
        detail,
    })
}

fn corruption_of(e: Error, offset: u64, default: CorruptionKind) -> Corruption {
    match e {
        Error::Corrupt {
            offset,
            kind,
            detail,
        } => Corruption {
            offset,
            kind,
            detail,
        },
        other => Corruption {
            offset,
            kind: default,
            detail: other.to_string(),
        },
    }
}

fn not_a_capture(found: &[u8]) -> Error {
    Error::NotACapture {
        expected: FILE_MAGIC,
        found: found.to_vec(),
    }
}

/// True when the bytes after the magic could still become a valid version-1 header.
fn header_prefix_plausible(b: &[u8]) -> bool {
    b.len() < 10 || u16::from_le_bytes([b[8], b[9]]) <= VERSION_MAJOR
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<CaptureReader>();
}
