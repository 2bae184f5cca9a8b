//! The capture writer: appends records, stores payloads once per content, writes the index.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use lz4_flex::block::{CompressTable, compress_into_with_table, get_maximum_output_size};

use super::format::{
    BLOB_HEADER_LEN, BlobHeader, CHUNK_HEADER_LEN, CODEC_LZ4, CODEC_STORED, CODEC_ZSTD, ChunkKind,
    FileHeader, Footer, INDEX_CHUNK_ENTRIES, IndexRoot, MAX_CHUNK_BODY, VERSION_MINOR,
    VERSION_MINOR_WITHOUT_ZSTD, encode_chunk_header, encode_index_chunk, put_chunk_header,
    put_crc_prefix, seal_chunk,
};
use super::{Error, Result, WriterStats, codec};
use crate::record::{BlobRef, ContentHash, Payload, Record, RecordBody, RecordId, RecordKind};

/// Size of the write buffer.
const BUFFER_CAPACITY: usize = 1 << 20;
/// Room a record is encoded into without growing the buffer: the buffer is handed to the
/// output first when less is left. Larger records (long messages) still fit, by growing it.
const RECORD_ROOM: usize = 4096;

/// When appended bytes reach the operating system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Bytes collect in a 1 MiB buffer and are written when it fills, on `flush`, `finish` or
    /// drop. Fastest; a crash of this process loses up to 1 MiB.
    #[default]
    Buffered,
    /// Every `append` hands its bytes (and the blobs stored for it) to the operating system with
    /// write(2) before it returns, so a crash of this process (or of the renderer it is about to
    /// call) loses nothing already appended. No fsync: call [`CaptureWriter::sync`] for that.
    CrashSafe,
}

/// How a [`CaptureWriter`] stores blob data. Whatever the codec, a blob whose compressed form
/// saves less than 1/8 of its bytes is stored as it is; so is a blob of 2 MiB or more when none
/// of 16 probes of 32 KiB spread over it saves 1/32, without compressing the whole of it (noise,
/// already compressed data: the whole pass would be thrown away).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Blobs stored as they are.
    None,
    /// lz4 block compression (the default): fast enough to keep up with a guest while recording
    /// (docs/BENCHMARKS.md), about 4-13x on desktop frames.
    #[default]
    Lz4,
    /// zstd at the given level ([`Compression::ZSTD_LEVELS`]): several times smaller than lz4 on
    /// frames and guest memory, slower to write at high levels. Makes the file version 1.2.
    Zstd(i32),
}

impl Compression {
    /// The zstd levels accepted (zstd's own range of normal levels).
    pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=22;
    /// The level `zstd` without a number means (zstd's own default).
    pub const ZSTD_DEFAULT_LEVEL: i32 = 3;
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Lz4 => f.write_str("lz4"),
            Compression::Zstd(level) => write!(f, "zstd:{level}"),
        }
    }
}

/// A compression spec that [`Compression`]'s `FromStr` does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseCompressionError {
    /// Not `none`, `lz4`, `zstd` or `zstd:LEVEL`.
    #[error("unknown compression {spec:?}: expected none, lz4, zstd or zstd:LEVEL")]
    Unknown {
        /// What was given.
        spec: String,
    },
    /// `zstd:LEVEL` with a level that is not a number in [`Compression::ZSTD_LEVELS`].
    #[error("zstd level {level:?} is not a number from {min} to {max}")]
    BadLevel {
        /// The level as given.
        level: String,
        /// Lowest level accepted.
        min: i32,
        /// Highest level accepted.
        max: i32,
    },
}

impl std::str::FromStr for Compression {
    type Err = ParseCompressionError;

    /// Parses `none`, `lz4`, `zstd` (level [`Compression::ZSTD_DEFAULT_LEVEL`]) or `zstd:LEVEL`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        match spec {
            "none" => return Ok(Compression::None),
            "lz4" => return Ok(Compression::Lz4),
            "zstd" => return Ok(Compression::Zstd(Compression::ZSTD_DEFAULT_LEVEL)),
            _ => {}
        }
        let Some(level) = spec.strip_prefix("zstd:") else {
            return Err(ParseCompressionError::Unknown { spec: spec.into() });
        };
        match level.parse::<i32>() {
            Ok(n) if Compression::ZSTD_LEVELS.contains(&n) => Ok(Compression::Zstd(n)),
            _ => Err(ParseCompressionError::BadLevel {
                level: level.into(),
                min: *Compression::ZSTD_LEVELS.start(),
                max: *Compression::ZSTD_LEVELS.end(),
            }),
        }
    }
}

/// Blobs at least this long are probed before they are compressed: shorter ones cost little to
/// compress whole, and the probes would be a large part of them (a quarter at this length).
pub(crate) const PROBE_MIN_LEN: usize = 2 << 20;
/// Bytes in one probe: repetition within 32 KiB (rows of noise up to 8192 pixels wide) shows in
/// a probe; lz4 matches up to 64 KiB back and zstd further, which probes do not see.
pub(crate) const PROBE_LEN: usize = 32 << 10;
/// Probes per blob, spread from its first byte to its last: 15 gaps, so any stretch of a blob
/// longer than 1/15 of it plus [`PROBE_LEN`] (under 1/12 of a probed blob) holds a whole probe,
/// and a blob that saves 1/8 because of one compressible stretch is found.
pub(crate) const PROBES: usize = 16;
/// A probe "compresses" when it saves at least 1/`PROBE_SAVING` of its bytes: far below the 1/8
/// a whole blob must save, because a probe has less history to match against than the whole
/// blob (it underestimates), and a wrong "compresses" costs only time while a wrong "does not"
/// costs file size.
pub(crate) const PROBE_SAVING: usize = 32;

/// Offsets of the [`PROBES`] probes in a blob of `len` (>= [`PROBE_LEN`]) bytes: evenly spread,
/// the first at the start and the last ending at the end.
pub(crate) fn probe_offsets(len: usize) -> impl Iterator<Item = usize> {
    let last = len.saturating_sub(PROBE_LEN) as u64;
    (0..PROBES as u64).map(move |i| (last * i / (PROBES as u64 - 1)) as usize)
}

/// The incompressibility test: true when `bytes` is at least [`PROBE_MIN_LEN`] long and
/// `compresses` says no for every one of its probes (it stops at the first yes). A blob that
/// compresses anywhere a probe looks is compressed whole, so the test only ever skips the
/// compression of data that is incompressible at [`PROBES`] places spread over all of it.
pub(crate) fn looks_incompressible(
    bytes: &[u8],
    mut compresses: impl FnMut(&[u8]) -> bool,
) -> bool {
    bytes.len() >= PROBE_MIN_LEN
        && probe_offsets(bytes.len()).all(|at| {
            bytes
                .get(at..at + PROBE_LEN)
                .is_some_and(|probe| !compresses(probe))
        })
}

/// How a [`CaptureWriter`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterOptions {
    /// When bytes reach the operating system.
    pub sync: SyncPolicy,
    /// Payloads up to this many bytes are stored inline in the record; longer ones become blobs.
    pub inline_max: usize,
    /// How blobs are compressed (kept raw anyway when that saves less than 1/8).
    pub compression: Compression,
    /// The header's creation time; `None` takes the wall clock now.
    pub created_unix_ns: Option<u64>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            sync: SyncPolicy::Buffered,
            inline_max: 128,
            compression: Compression::Lz4,
            created_unix_ns: None,
        }
    }
}

impl WriterOptions {
    /// These options with `sync` set.
    pub fn with_sync(mut self, sync: SyncPolicy) -> Self {
        self.sync = sync;
        self
    }

    /// These options with `compression` set.
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }
}

/// Appends records to a capture.
///
/// Dropping a writer without [`CaptureWriter::finish`] flushes what it buffered (errors
/// ignored) and leaves a valid capture without an index, which readers open by scanning.
pub struct CaptureWriter<W: Write> {
    /// The output; `None` only once [`CaptureWriter::finish_into_inner`] took it.
    out: Option<W>,
    /// Bytes not yet handed to `out` (at most about [`BUFFER_CAPACITY`]): records are encoded
    /// in place at its end, so a small record is copied once on its way to the output.
    buf: Vec<u8>,
    opts: WriterOptions,
    /// File offset of the next byte written.
    pos: u64,
    offsets: Vec<u64>,
    frames: Vec<RecordId>,
    per_kind: Vec<u64>,
    blobs: HashMap<u128, (u64, u64)>,
    stats: WriterStats,
    compressed: Vec<u8>,
    table: CompressTable,
    /// The zstd compression context, made once and reused for every blob (`Compression::Zstd`).
    zstd: Option<zstd::bulk::Compressor<'static>>,
    failed: bool,
}

impl CaptureWriter<File> {
    /// Creates (or truncates) `path` and writes the file header.
    pub fn create(path: impl AsRef<Path>, opts: WriterOptions) -> Result<Self> {
        let file = File::create(path).map_err(|source| Error::Io { offset: 0, source })?;
        Self::new(file, opts)
    }

    /// Flushes the buffer and asks the operating system to put the data on stable storage.
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        let offset = self.pos;
        self.out
            .as_ref()
            .ok_or(Error::WriterFailed)?
            .sync_data()
            .map_err(|source| Error::Io { offset, source })
    }
}

impl<W: Write> CaptureWriter<W> {
    /// Starts a capture on `inner` (positioned at its start) and writes the file header.
    pub fn new(inner: W, opts: WriterOptions) -> Result<Self> {
        let created = opts.created_unix_ns.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        let zstd = match opts.compression {
            Compression::Zstd(level) => Some(
                zstd::bulk::Compressor::new(level)
                    .map_err(|source| Error::Io { offset: 0, source })?,
            ),
            _ => None,
        };
        let mut header = FileHeader::new(created);
        header.version_minor = if zstd.is_some() {
            VERSION_MINOR
        } else {
            VERSION_MINOR_WITHOUT_ZSTD
        };
        let mut w = CaptureWriter {
            out: Some(inner),
            buf: Vec::with_capacity(BUFFER_CAPACITY),
            opts,
            pos: 0,
            offsets: Vec::new(),
            frames: Vec::new(),
            per_kind: vec![0; usize::from(RecordKind::FIRST_INTERNAL)],
            blobs: HashMap::new(),
            stats: WriterStats::default(),
            compressed: Vec::new(),
            table: CompressTable::default(),
            zstd,
            failed: false,
        };
        w.write(&header.encode())?;
        if w.opts.sync == SyncPolicy::CrashSafe {
            w.flush()?;
        }
        Ok(w)
    }

    /// Turns `bytes` into a payload: inline when short, otherwise a reference to a blob chunk,
    /// written now unless the same content was stored before.
    pub fn store(&mut self, bytes: &[u8]) -> Result<Payload> {
        self.check()?;
        if bytes.len() <= self.opts.inline_max {
            let len = bytes.len() as u64;
            self.stats.raw_payload_bytes += len;
            self.stats.stored_bytes += len;
            return Ok(Payload::Inline(bytes.to_vec()));
        }
        self.store_blob(bytes)
    }

    /// Like [`CaptureWriter::store`], but always a blob reference, however short `bytes` are:
    /// for tools that copy a capture and keep every payload in the form it had (`vgt-inspect
    /// repack`). Dedup is the same: content stored before is referenced, not written again.
    pub fn store_blob(&mut self, bytes: &[u8]) -> Result<Payload> {
        self.check()?;
        let len = bytes.len() as u64;
        self.stats.raw_payload_bytes += len;
        let hash = crate::hash::content_hash(bytes);
        if let Some(&(offset, raw_len)) = self.blobs.get(&hash)
            && raw_len == len
        {
            self.stats.dedup_hits += 1;
            return Ok(Payload::Blob(BlobRef {
                hash: ContentHash(hash),
                len,
                offset,
            }));
        }
        let (codec, data_len) = self.compress(bytes);
        let body_len = (BLOB_HEADER_LEN + data_len) as u64;
        if body_len > u64::from(MAX_CHUNK_BODY) {
            self.stats.raw_payload_bytes -= len;
            return Err(Error::TooLarge {
                len: body_len,
                max: u64::from(MAX_CHUNK_BODY),
            });
        }
        let blob_header = BlobHeader {
            hash,
            raw_len: len,
            codec,
        }
        .encode();
        let compressed = std::mem::take(&mut self.compressed);
        let data = if codec == CODEC_STORED {
            bytes
        } else {
            &compressed[..data_len]
        };
        // As in `seal_chunk`: one CRC call covers the prefix and the blob header, then the
        // data is appended to it.
        let mut head = [0u8; CHUNK_HEADER_LEN + BLOB_HEADER_LEN];
        head[CHUNK_HEADER_LEN..].copy_from_slice(&blob_header);
        put_crc_prefix(&mut head, ChunkKind::BLOB, body_len as u32);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&head[8..]), data);
        put_chunk_header(&mut head, ChunkKind::BLOB, body_len as u32, crc);
        let offset = self.pos;
        let written = self.write(&head).and_then(|()| self.write(data));
        self.compressed = compressed;
        written?;
        self.blobs.insert(hash, (offset, len));
        self.stats.blobs += 1;
        self.stats.stored_bytes += data_len as u64;
        Ok(Payload::Blob(BlobRef {
            hash: ContentHash(hash),
            len,
            offset,
        }))
    }

    /// Compresses into `self.compressed` when that saves at least 1/8; returns the codec and
    /// the stored length. A long blob whose probes ([`looks_incompressible`]) do not compress
    /// is stored raw without compressing the whole of it.
    fn compress(&mut self, bytes: &[u8]) -> (u8, usize) {
        let keep = bytes.len() - bytes.len() / 8;
        if self.opts.compression != Compression::None && self.probes_fail(bytes) {
            return (CODEC_STORED, bytes.len());
        }
        match self.opts.compression {
            Compression::None => (CODEC_STORED, bytes.len()),
            Compression::Lz4 => {
                let max = get_maximum_output_size(bytes.len());
                if self.compressed.len() < max {
                    self.compressed.resize(max, 0);
                }
                match compress_into_with_table(bytes, &mut self.compressed, &mut self.table) {
                    Ok(n) if n <= keep => (CODEC_LZ4, n),
                    _ => (CODEC_STORED, bytes.len()),
                }
            }
            Compression::Zstd(_) => {
                let Some(cctx) = self.zstd.as_mut() else {
                    return (CODEC_STORED, bytes.len());
                };
                // Only a result that saves 1/8 is kept, so the output never needs more room.
                if self.compressed.len() < keep {
                    self.compressed.resize(keep, 0);
                }
                match cctx.compress_to_buffer(bytes, &mut self.compressed[..keep]) {
                    Ok(n) if n <= keep => (CODEC_ZSTD, n),
                    // Too small a buffer means it would not save 1/8; store it raw.
                    _ => (CODEC_STORED, bytes.len()),
                }
            }
        }
    }

    /// True when `bytes` is long enough to probe and no probe, compressed with this writer's
    /// codec, saves [`PROBE_SAVING`].
    fn probes_fail(&mut self, bytes: &[u8]) -> bool {
        let limit = PROBE_LEN - PROBE_LEN / PROBE_SAVING;
        match self.opts.compression {
            Compression::None => false,
            Compression::Lz4 => {
                let max = get_maximum_output_size(PROBE_LEN);
                if self.compressed.len() < max {
                    self.compressed.resize(max, 0);
                }
                let (out, table) = (&mut self.compressed, &mut self.table);
                looks_incompressible(bytes, |probe| {
                    compress_into_with_table(probe, out, table).is_ok_and(|n| n <= limit)
                })
            }
            Compression::Zstd(_) => {
                let Some(cctx) = self.zstd.as_mut() else {
                    return false;
                };
                if self.compressed.len() < limit {
                    self.compressed.resize(limit, 0);
                }
                let out = &mut self.compressed[..limit];
                // A buffer too small for the result means the probe saved less than the limit.
                looks_incompressible(bytes, |probe| {
                    cctx.compress_to_buffer(probe, &mut *out)
                        .is_ok_and(|n| n <= limit)
                })
            }
        }
    }

    /// Appends a record and returns its id. Blob payloads must come from this writer's
    /// [`CaptureWriter::store`].
    pub fn append(&mut self, record: &Record) -> Result<RecordId> {
        self.check()?;
        for p in record.body.payload_iter() {
            if let Payload::Blob(r) = p
                && self.blobs.get(&r.hash.0) != Some(&(r.offset, r.len))
            {
                return Err(Error::UnknownBlob {
                    hash: r.hash.0,
                    offset: r.offset,
                });
            }
        }
        let kind = record.body.kind().0;
        let offset = self.pos;
        // Encoded in place at the end of the buffer; most records are far smaller than the
        // room kept, so the buffer does not grow.
        if self.buf.len() + RECORD_ROOM > BUFFER_CAPACITY {
            self.write_out()?;
        }
        let start = self.buf.len();
        self.buf.resize(start + CHUNK_HEADER_LEN, 0);
        let encoded = codec::encode_body(&mut self.buf, record)
            .map_err(|detail| Error::InvalidRecord { kind, detail })
            .and_then(|()| {
                let body_len = (self.buf.len() - start - CHUNK_HEADER_LEN) as u64;
                if body_len > u64::from(MAX_CHUNK_BODY) {
                    return Err(Error::TooLarge {
                        len: body_len,
                        max: u64::from(MAX_CHUNK_BODY),
                    });
                }
                Ok(())
            });
        if let Err(e) = encoded {
            self.buf.truncate(start);
            return Err(e);
        }
        seal_chunk(kind, &mut self.buf[start..]);
        self.pos += (self.buf.len() - start) as u64;
        if self.buf.len() >= BUFFER_CAPACITY {
            self.write_out()?;
        }
        let id = self.offsets.len() as RecordId;
        self.offsets.push(offset);
        if let Some(n) = self.per_kind.get_mut(usize::from(kind)) {
            *n += 1;
        }
        if matches!(record.body, RecordBody::Frame(_)) {
            self.frames.push(id);
        }
        self.stats.records += 1;
        if self.opts.sync == SyncPolicy::CrashSafe {
            self.flush()?;
        }
        Ok(id)
    }

    /// Appends a record made of `ts_ns` and `body`.
    pub fn append_body(&mut self, ts_ns: u64, body: RecordBody) -> Result<RecordId> {
        self.append(&Record { ts_ns, body })
    }

    /// Counts so far.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            file_bytes: self.pos,
            ..self.stats
        }
    }

    /// Number of records appended.
    pub fn len(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// True when no record was appended.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Hands buffered bytes to the operating system.
    pub fn flush(&mut self) -> Result<()> {
        self.write_out()?;
        let offset = self.pos;
        let flushed = match self.out.as_mut() {
            Some(out) => out.flush(),
            None => return Err(Error::WriterFailed),
        };
        flushed.map_err(|source| {
            self.failed = true;
            Error::Io { offset, source }
        })
    }

    /// Writes the index and footer, flushes, and returns the final counts. The file is complete
    /// once this returns; on a file, call [`CaptureWriter::sync`] before it for durability of the
    /// records, or rely on the operating system for the index (a lost index is rebuilt by a
    /// scan).
    pub fn finish(self) -> Result<WriterStats> {
        self.finish_into_inner().map(|(stats, _)| stats)
    }

    /// Like [`CaptureWriter::finish`], and hands back the inner writer with every byte written
    /// to it, for an output that must be closed explicitly to be complete (vgt-capture's
    /// crash-safe mapped file cuts its reserved space there) and whose close can fail.
    pub fn finish_into_inner(mut self) -> Result<(WriterStats, W)> {
        self.check()?;
        let end_of_data = self.pos;
        let offsets = std::mem::take(&mut self.offsets);
        let mut chunk_offsets = Vec::with_capacity(offsets.len().div_ceil(8192));
        for (i, entries) in offsets.chunks(INDEX_CHUNK_ENTRIES as usize).enumerate() {
            chunk_offsets.push(self.pos);
            let body = encode_index_chunk(i as u64 * INDEX_CHUNK_ENTRIES, entries);
            self.write_chunk(ChunkKind::INDEX_CHUNK, &body)?;
        }
        let root = IndexRoot {
            record_count: offsets.len() as u64,
            chunk_offsets,
            frames: std::mem::take(&mut self.frames),
            per_kind: self
                .per_kind
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| (k as u16, *n))
                .collect(),
            raw_payload_bytes: self.stats.raw_payload_bytes,
            stored_bytes: self.stats.stored_bytes,
            blobs: self.stats.blobs,
            dedup_hits: self.stats.dedup_hits,
            end_of_data,
        };
        let root_offset = self.pos;
        self.write_chunk(ChunkKind::INDEX_ROOT, &root.encode())?;
        let footer = Footer {
            root_offset,
            record_count: root.record_count,
        };
        self.write(&footer.encode())?;
        self.flush()?;
        let stats = self.stats();
        let inner = self.out.take().ok_or(Error::WriterFailed)?;
        Ok((stats, inner))
    }

    fn write_chunk(&mut self, kind: u16, body: &[u8]) -> Result<()> {
        if body.len() as u64 > u64::from(MAX_CHUNK_BODY) {
            return Err(Error::TooLarge {
                len: body.len() as u64,
                max: u64::from(MAX_CHUNK_BODY),
            });
        }
        self.write(&encode_chunk_header(kind, body))?;
        self.write(body)
    }

    /// Appends `bytes` to the output: into the buffer when they fit, otherwise (a large blob)
    /// straight to the output after what is buffered.
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.buf.len() + bytes.len() > BUFFER_CAPACITY {
            self.write_out()?;
        }
        if bytes.len() >= BUFFER_CAPACITY {
            let written = match self.out.as_mut() {
                Some(out) => out.write_all(bytes),
                None => return Err(Error::WriterFailed),
            };
            if let Err(source) = written {
                self.failed = true;
                return Err(Error::Io {
                    offset: self.pos,
                    source,
                });
            }
        } else {
            self.buf.extend_from_slice(bytes);
        }
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Hands the buffer to the output (without flushing the output itself).
    fn write_out(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = match self.out.as_mut() {
            Some(out) => out.write_all(&self.buf),
            None => return Err(Error::WriterFailed),
        };
        // Reported as the writer's end of data, as a failed flush is.
        let offset = self.pos;
        self.buf.clear();
        written.map_err(|source| {
            self.failed = true;
            Error::Io { offset, source }
        })
    }

    fn check(&self) -> Result<()> {
        if self.failed {
            Err(Error::WriterFailed)
        } else {
            Ok(())
        }
    }
}

impl<W: Write> Drop for CaptureWriter<W> {
    fn drop(&mut self) {
        // Without `finish`: what was buffered still reaches the output (a capture without an
        // index, which readers open by scanning). Nothing to report errors to.
        if !self.failed && self.out.is_some() {
            let _ = self.flush();
        }
    }
}

impl<W: Write> std::fmt::Debug for CaptureWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureWriter")
            .field("opts", &self.opts)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn probes_of_an_incompressible_blob_are_spread_from_its_first_byte_to_its_last() {
        let blob: Vec<u8> = (0..PROBE_MIN_LEN + 12345)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut seen = Vec::new();
        assert!(looks_incompressible(&blob, |p| {
            seen.push((p.as_ptr() as usize - blob.as_ptr() as usize, p.len()));
            false
        }));
        assert_eq!(seen.len(), PROBES);
        assert_eq!(seen.first(), Some(&(0, PROBE_LEN)));
        assert_eq!(seen.last(), Some(&(blob.len() - PROBE_LEN, PROBE_LEN)));
        let gaps: Vec<usize> = seen.windows(2).map(|w| w[1].0 - w[0].0).collect();
        let (min, max) = (gaps.iter().min().unwrap(), gaps.iter().max().unwrap());
        assert!(max - min <= 1, "evenly spread: {gaps:?}");
    }

    #[test]
    fn probing_stops_at_the_first_probe_that_compresses() {
        let blob = vec![0u8; PROBE_MIN_LEN];
        let mut calls = 0;
        assert!(!looks_incompressible(&blob, |_| {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
    }

    #[test]
    fn blob_shorter_than_the_probing_length_is_never_probed() {
        let blob = vec![0u8; PROBE_MIN_LEN - 1];
        assert!(!looks_incompressible(&blob, |_| panic!("probed")));
    }
}
