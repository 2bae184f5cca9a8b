//! Record sinks: the capture file (vgt-format's writer) and a null sink for `--no-record`.

use std::fs::File;
use std::path::Path;

use vgt_format::file::{CaptureWriter, Compression, SyncPolicy, WriterOptions};

use vgt_format::record::{Payload, Record, RecordId};

use crate::recorder::{RecordSink, SinkError};
use crate::server::SyncMode;

/// Discards everything (`--no-record`): the backend still serves the guest.
#[derive(Debug, Default)]
pub struct NullSink {
    next: RecordId,
}

impl RecordSink for NullSink {
    fn store(&mut self, _bytes: &[u8]) -> Result<Payload, SinkError> {
        Ok(Payload::empty())
    }

    fn append(&mut self, _record: &Record) -> Result<RecordId, SinkError> {
        let id = self.next;
        self.next += 1;
        Ok(id)
    }

    fn finish(self: Box<Self>) -> Result<(), SinkError> {
        Ok(())
    }

    fn bytes_written(&self) -> u64 {
        0
    }
}

/// The capture file, written through vgt-format's [`CaptureWriter`].
pub struct FileSink {
    writer: CaptureWriter<File>,
}

impl RecordSink for FileSink {
    fn store(&mut self, bytes: &[u8]) -> Result<Payload, SinkError> {
        self.writer.store(bytes).map_err(SinkError::wrap)
    }

    fn append(&mut self, record: &Record) -> Result<RecordId, SinkError> {
        self.writer.append(record).map_err(SinkError::wrap)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.writer.flush().map_err(SinkError::wrap)
    }

    fn finish(self: Box<Self>) -> Result<(), SinkError> {
        self.writer.finish().map(|_| ()).map_err(SinkError::wrap)
    }

    fn bytes_written(&self) -> u64 {
        self.writer.stats().file_bytes
    }
}

/// Creates the capture file at `path` (truncating an existing one), blobs lz4-compressed.
pub fn open_file(path: &Path, sync: SyncMode) -> Result<Box<dyn RecordSink>, SinkError> {
    open_file_with(path, sync, Compression::default())
}

/// Creates the capture file at `path` (truncating an existing one) with blobs compressed as
/// `compression` says (`--compression`).
pub fn open_file_with(
    path: &Path,
    sync: SyncMode,
    compression: Compression,
) -> Result<Box<dyn RecordSink>, SinkError> {
    let sync = match sync {
        SyncMode::CrashSafe => SyncPolicy::CrashSafe,
        SyncMode::Buffered => SyncPolicy::Buffered,
    };
    let opts = WriterOptions::default()
        .with_sync(sync)
        .with_compression(compression);
    let writer = CaptureWriter::create(path, opts).map_err(SinkError::wrap)?;
    Ok(Box::new(FileSink { writer }))
}
