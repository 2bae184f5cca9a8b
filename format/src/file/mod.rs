//! The capture file container: chunk framing, writer, reader, blobs and index.
//!
//! A capture is a 64-byte [`FileHeader`] followed by checksummed chunks written back to back:
//! records (kind codes below `0x0100`), content-addressed blobs, and, when the writer finished
//! cleanly, an index and a 32-byte footer. docs/FORMAT.md describes every byte; the layout tables
//! of the record bodies live in [`codec::LAYOUTS`] and a test keeps the document in step with them.
//!
//! - [`CaptureWriter`] appends records and stores payloads (inline, or once per content in a
//!   blob compressed as [`Compression`] says: lz4 by default, zstd, or none), and writes the
//!   index on [`CaptureWriter::finish`].
//! - [`CaptureReader`] opens a capture through its index in constant time, or rebuilds the
//!   record table by scanning when the index is missing or damaged; it survives truncation and
//!   corruption and reports them in [`Health`].

pub mod codec;
pub(crate) mod format;
mod reader;
mod source;
mod writer;

pub use format::{
    BLOB_HEADER_LEN, CHUNK_HEADER_LEN, CHUNK_SYNC, ChunkKind, FILE_HEADER_LEN, FILE_MAGIC,
    FOOTER_LEN, FOOTER_MAGIC, FileHeader, INDEX_CHUNK_ENTRIES, MAX_CHUNK_BODY, VERSION_MAJOR,
    VERSION_MINOR,
};
pub use reader::{CaptureReader, IoStats, RecordIter};
pub use writer::{CaptureWriter, Compression, ParseCompressionError, SyncPolicy, WriterOptions};

use crate::record::{RecordId, RecordKind};

/// Everything that can go wrong while writing or reading a capture.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operating system refused a read or write.
    #[error("I/O error at offset {offset}: {source}")]
    Io {
        /// File offset of the operation (the writer's end of file when writing).
        offset: u64,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a vgt capture.
    #[error("not a vgt capture: expected magic {expected:02x?}, found {found:02x?}")]
    NotACapture {
        /// The magic a capture starts with.
        expected: [u8; 8],
        /// The first bytes of the file (up to 8).
        found: Vec<u8>,
    },
    /// The file was written by a newer, incompatible major version of the format.
    #[error(
        "capture format version {found_major}.{found_minor} is not supported (this reader reads major version {supported_major})"
    )]
    UnsupportedVersion {
        /// Major version in the file.
        found_major: u16,
        /// Minor version in the file.
        found_minor: u16,
        /// The major version this reader understands.
        supported_major: u16,
    },
    /// A checksum, hash, length or structure check failed at `offset`.
    #[error("corrupt capture at offset {offset} ({kind:?}): {detail}")]
    Corrupt {
        /// File offset of the damaged chunk (or header/footer).
        offset: u64,
        /// What kind of damage.
        kind: CorruptionKind,
        /// Expected vs found, in words.
        detail: String,
    },
    /// The file ends inside the structure at `offset`.
    #[error("capture truncated at offset {offset}: needed {needed} bytes, {available} available")]
    Truncated {
        /// Where the incomplete structure starts.
        offset: u64,
        /// Bytes the structure needs.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// A record id past the end of the capture.
    #[error("no record {id}: the capture has {len} records")]
    NoSuchRecord {
        /// The id asked for.
        id: RecordId,
        /// Number of records.
        len: u64,
    },
    /// A record or payload too large for one chunk.
    #[error("chunk body of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Body length that was needed.
        len: u64,
        /// The limit ([`MAX_CHUNK_BODY`]).
        max: u64,
    },
    /// A record cannot be encoded as given (a field exceeds its width, a bad kind code …).
    #[error("record of kind {kind:#06x} cannot be encoded: {detail}")]
    InvalidRecord {
        /// Kind code of the record.
        kind: u16,
        /// What is wrong.
        detail: String,
    },
    /// A record refers to a blob that this writer did not store.
    #[error("blob {hash:032x} at offset {offset} was not stored by this writer")]
    UnknownBlob {
        /// Hash in the reference.
        hash: u128,
        /// Offset in the reference.
        offset: u64,
    },
    /// An earlier write failed part-way; the writer refuses to continue so that it does not
    /// write chunks at wrong offsets.
    #[error("the writer failed earlier and cannot continue")]
    WriterFailed,
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The kinds of damage a reader recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// The file header's CRC does not match (the header fields were ignored).
    HeaderChecksum,
    /// A chunk's CRC does not match its bytes.
    ChunkChecksum,
    /// Bytes where a chunk should start are not a chunk (no sync marker, impossible length);
    /// the reader searched forward for the next valid chunk.
    BadFraming,
    /// A blob's content does not hash to its recorded hash, or its header is inconsistent.
    BlobHash,
    /// A blob's compressed data does not decompress.
    BlobDecode,
    /// A chunk with a valid CRC whose body cannot be decoded.
    BadRecord,
    /// The footer is damaged.
    Footer,
    /// The index root or an index chunk is damaged or inconsistent.
    Index,
}

/// One damaged place found while opening or verifying a capture.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Corruption {
    /// File offset of the damaged chunk (0 for the header).
    pub offset: u64,
    /// What kind of damage.
    pub kind: CorruptionKind,
    /// Expected vs found, in words.
    pub detail: String,
}

/// What the reader found when it opened the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// True when the record table came from a valid index (footer and root verified); false when
    /// it was rebuilt by scanning.
    pub indexed: bool,
    /// Offset where an incomplete chunk (or header, or footer) starts, when the file was cut.
    pub truncated_at: Option<u64>,
    /// Damage found while opening (in indexed mode only the header, footer and root are checked
    /// at open; [`CaptureReader::verify`] checks everything).
    pub corrupt: Vec<Corruption>,
    /// Number of records the reader can address.
    pub recovered_records: u64,
    /// Length of the file in bytes.
    pub file_len: u64,
    /// Zero bytes after the last complete chunk of an unfinished capture: space a crash-safe
    /// writer reserved (and mapped) but had not filled when it stopped. Not damage; ignored.
    pub zero_tail: u64,
}

impl Health {
    /// True when nothing was wrong.
    pub fn is_clean(&self) -> bool {
        self.truncated_at.is_none() && self.corrupt.is_empty()
    }
}

/// Payload accounting kept by the writer and stored in the index root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriterStats {
    /// Records appended.
    pub records: u64,
    /// Blob chunks written (distinct contents).
    pub blobs: u64,
    /// Payloads that matched an already stored blob.
    pub dedup_hits: u64,
    /// Bytes passed to `store` (every payload, inline or blob, counted each time).
    pub raw_payload_bytes: u64,
    /// Bytes those payloads occupy in the file (inline bytes plus blob data after compression;
    /// dedup hits add nothing).
    pub stored_bytes: u64,
    /// Bytes written so far (the file length once flushed).
    pub file_bytes: u64,
}

/// Counts kept in the index root, available without reading any record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IndexStats {
    /// Number of records.
    pub records: u64,
    /// Records per kind code, in code order (kinds with no record omitted).
    pub per_kind: Vec<(RecordKind, u64)>,
    /// Number of frame records.
    pub frames: u64,
    /// Payload accounting from the writer (its `file_bytes` is the end of data: where the index
    /// starts).
    pub payloads: WriterStats,
}

/// Result of [`CaptureReader::verify`]: every chunk, CRC and blob hash checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Chunks whose CRC verified.
    pub chunks: u64,
    /// Record chunks among them.
    pub records: u64,
    /// Blob chunks among them (each decompressed and its hash checked).
    pub blobs: u64,
    /// Chunks of kinds this reader does not know (skipped).
    pub unknown_chunks: u64,
    /// Offset where the file was cut, if it was.
    pub truncated_at: Option<u64>,
    /// Every damaged place found.
    pub corrupt: Vec<Corruption>,
    /// True when a footer and index were present and agreed with the records found.
    pub index_ok: bool,
}

impl VerifyReport {
    /// True when no damage and no truncation was found.
    pub fn is_clean(&self) -> bool {
        self.truncated_at.is_none() && self.corrupt.is_empty()
    }
}
