//! Record sinks: the capture file (vgt-format's writer) and a null sink for `--no-record`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vgt_format::file::{CaptureWriter, Compression, SyncPolicy, WriterOptions};

use vgt_format::record::{Payload, Record, RecordId};

use crate::direct_io::{DirectIoFile, OpenedDirect};
use crate::mapped_file::{MappedFile, Opened, Output};
use crate::recorder::{RecordSink, SinkError};
use crate::server::SyncMode;
use crate::writer_thread::ThreadedFile;

/// Where the capture writer's bytes go: to the file on the caller's thread (crash-safe mode,
/// whose writes must have reached the operating system when they return: stored into a shared
/// mapping, or write(2) where the file cannot be mapped), or through the writer thread
/// (buffered mode).
pub enum FileOut {
    /// Crash-safe mode, on the caller's thread: into a [`MappedFile`], or with write(2) where
    /// it cannot be mapped.
    OnCaller(Output),
    /// Buffered mode: written by a writer thread, with O_DIRECT where the file system takes it,
    /// else into a [`MappedFile`] where it can be mapped.
    Threaded(ThreadedFile),
}

impl FileOut {
    /// Completes the file once the writer is done with it: a mapped file is cut to the bytes
    /// written (a plain one is complete when its last write returned).
    fn close(self) -> std::io::Result<()> {
        match self {
            FileOut::OnCaller(mut f) => f.close(),
            FileOut::Threaded(f) => f.close(),
        }
    }
}

impl Write for FileOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            FileOut::OnCaller(f) => f.write(buf),
            FileOut::Threaded(f) => f.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            FileOut::OnCaller(f) => f.write_all(buf),
            FileOut::Threaded(f) => f.write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            FileOut::OnCaller(f) => f.flush(),
            FileOut::Threaded(f) => f.flush(),
        }
    }
}

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
///
/// The writer itself always buffers; crash-safe mode is this sink's: every
/// [`RecordSink::append`] flushes (so a command's record, and the blobs and output records
/// before it, reach the operating system before the device runs the command: one copy into the
/// mapped file, or one write(2) where the file cannot be mapped), while
/// [`RecordSink::append_output`] records wait for the next flush.
pub struct FileSink {
    writer: CaptureWriter<FileOut>,
    crash_safe: bool,
    /// Output records appended since the last flush (crash-safe mode).
    outputs_pending: bool,
    /// Buffered mode: the writer thread's flush switch (see [`ThreadedFile::flush_waits`]).
    flush_waits: Option<Arc<AtomicBool>>,
}

impl FileSink {
    fn flush_now(&mut self) -> Result<(), SinkError> {
        self.outputs_pending = false;
        self.writer.flush().map_err(SinkError::wrap)
    }
}

impl RecordSink for FileSink {
    fn store(&mut self, bytes: &[u8]) -> Result<Payload, SinkError> {
        self.writer.store(bytes).map_err(SinkError::wrap)
    }

    fn append(&mut self, record: &Record) -> Result<RecordId, SinkError> {
        let id = self.writer.append(record).map_err(SinkError::wrap)?;
        if self.crash_safe {
            self.flush_now()?;
        }
        Ok(id)
    }

    fn append_output(&mut self, record: &Record) -> Result<RecordId, SinkError> {
        let id = self.writer.append(record).map_err(SinkError::wrap)?;
        self.outputs_pending |= self.crash_safe;
        Ok(id)
    }

    fn sync_outputs(&mut self) -> Result<(), SinkError> {
        if self.outputs_pending {
            self.flush_now()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.flush_now()
    }

    fn hand_over(&mut self) -> Result<(), SinkError> {
        // Buffered mode: hand the buffer to the writer thread and go on (waiting for up to
        // 32 MiB to be written would stall the queue worker).
        let Some(waits) = self.flush_waits.clone() else {
            return self.flush_now();
        };
        waits.store(false, Ordering::Relaxed);
        let r = self.flush_now();
        waits.store(true, Ordering::Relaxed);
        r
    }

    fn finish(self: Box<Self>) -> Result<(), SinkError> {
        let (_, out) = self.writer.finish_into_inner().map_err(SinkError::wrap)?;
        out.close().map_err(SinkError::wrap)
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
    open_file_as(path, sync, compression, true)
}

/// [`open_file_with`], whose buffered mode tries O_DIRECT only when `direct_io` says so (tests
/// of the mapped fallback turn it off).
fn open_file_as(
    path: &Path,
    sync: SyncMode,
    compression: Compression,
    direct_io: bool,
) -> Result<Box<dyn RecordSink>, SinkError> {
    let (out, flush_waits) = match sync {
        SyncMode::CrashSafe => (crash_safe_out(path)?, None),
        SyncMode::Buffered => {
            let t =
                ThreadedFile::new(buffered_output(path, direct_io)?).map_err(SinkError::wrap)?;
            let waits = t.flush_waits();
            (FileOut::Threaded(t), Some(waits))
        }
    };
    let writer = CaptureWriter::new(
        out,
        WriterOptions::default()
            .with_sync(SyncPolicy::Buffered)
            .with_compression(compression),
    )
    .map_err(SinkError::wrap)?;
    let mut sink = FileSink {
        writer,
        crash_safe: sync == SyncMode::CrashSafe,
        outputs_pending: false,
        flush_waits,
    };
    if sink.crash_safe {
        sink.flush_now()?;
    }
    Ok(Box::new(sink))
}

/// Creates the capture file at `path` (truncating an existing one) with the crash-safe output
/// (a shared mapping, or write(2) where the file cannot be mapped), flushed only when the
/// caller asks: for the proxy's barrier sink, which flushes per record or per batch itself.
pub fn open_file_flushed_by_caller(
    path: &Path,
    compression: Compression,
) -> Result<Box<dyn RecordSink>, SinkError> {
    let writer = CaptureWriter::new(
        crash_safe_out(path)?,
        WriterOptions::default()
            .with_sync(SyncPolicy::Buffered)
            .with_compression(compression),
    )
    .map_err(SinkError::wrap)?;
    Ok(Box::new(FileSink {
        writer,
        crash_safe: false,
        outputs_pending: false,
        flush_waits: None,
    }))
}

/// The buffered output for a new file at `path`: with O_DIRECT where the file system takes it
/// and `direct_io` allows it (no page cache to allocate and fill); else mapped (the writer
/// thread's copies then land in populated pages); where it cannot be, plain write(2) on the
/// writer thread is as good.
fn buffered_output(path: &Path, direct_io: bool) -> Result<Output, SinkError> {
    let mut file = open_rw(path)?;
    if direct_io {
        match DirectIoFile::open(path, file).map_err(SinkError::wrap)? {
            OpenedDirect::Direct(f) => return Ok(f.into()),
            OpenedDirect::Unsupported { file: f, .. } => file = f,
        }
    }
    Ok(match MappedFile::open(file).map_err(SinkError::wrap)? {
        Opened::Mapped(f) => f.into(),
        Opened::Unsupported { file, .. } => file.into(),
    })
}

/// Creates (or truncates) the file at `path` for reading and writing: a shared writable mapping
/// needs read access too.
fn open_rw(path: &Path) -> Result<File, SinkError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(SinkError::wrap)
}

/// The crash-safe output for a new file at `path`: mapped, or written with write(2) where the
/// file system cannot reserve or map it (said once per process on stderr).
fn crash_safe_out(path: &Path) -> Result<FileOut, SinkError> {
    static FALLBACK_SAID: AtomicBool = AtomicBool::new(false);
    match MappedFile::open(open_rw(path)?).map_err(SinkError::wrap)? {
        Opened::Mapped(f) => Ok(FileOut::OnCaller(Output::Mapped(f))),
        Opened::Unsupported { file, reason } => {
            if !FALLBACK_SAID.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "vgt-capture: {} cannot be mapped ({reason}); crash-safe mode writes \
                     each command with write(2) instead (slower, same guarantee)",
                    path.display()
                );
            }
            Ok(FileOut::OnCaller(Output::File(file)))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use vgt_format::record::{Lifecycle, LifecycleKind, RecordBody};

    fn lifecycle(message: &str) -> Record {
        Record {
            ts_ns: 1,
            body: RecordBody::Lifecycle(Lifecycle {
                kind: LifecycleKind::Error,
                queue: None,
                command: None,
                message: message.to_owned(),
            }),
        }
    }

    fn on_disk(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    /// The lifecycle messages a reader finds in the file as it is now, read with read(2).
    fn messages_in_file(path: &Path) -> Vec<String> {
        let reader = vgt_format::file::CaptureReader::from_bytes(std::fs::read(path).unwrap())
            .expect("the file opens at any time");
        assert!(reader.health().corrupt.is_empty(), "{:?}", reader.health());
        reader
            .iter()
            .map(|r| match r.unwrap().1.body {
                RecordBody::Lifecycle(l) => l.message,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn crash_safe_append_reaches_the_os_and_outputs_wait_for_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.vgt");
        let mut sink = open_file(&path, SyncMode::CrashSafe).unwrap();
        assert!(sink.bytes_written() > 0, "the header is written at once");
        assert!(messages_in_file(&path).is_empty());
        // What another process reads right after append returns, before any flush or finish.
        sink.append(&lifecycle("input")).unwrap();
        assert_eq!(messages_in_file(&path), ["input"]);
        sink.append_output(&lifecycle("output 1")).unwrap();
        sink.append_output(&lifecycle("output 2")).unwrap();
        assert_eq!(
            messages_in_file(&path),
            ["input"],
            "outputs wait in the buffer"
        );
        sink.append(&lifecycle("next input")).unwrap();
        assert_eq!(
            messages_in_file(&path),
            ["input", "output 1", "output 2", "next input"],
            "one copy carries all"
        );
        sink.append_output(&lifecycle("output 3")).unwrap();
        sink.sync_outputs().unwrap();
        assert_eq!(messages_in_file(&path).len(), 5);
        // The file holds reserved space until it is finished; the count is of record bytes.
        let written = sink.bytes_written();
        assert!(on_disk(&path) > written, "space is reserved ahead");
        sink.finish().unwrap();
        let reader = vgt_format::file::CaptureReader::open(&path).unwrap();
        // Indexed: the footer is found at the very end, so the reserved space was cut off.
        assert!(reader.health().is_clean() && reader.health().indexed);
        assert!(on_disk(&path) > written, "index and footer follow");
        let messages: Vec<String> = (0..reader.len())
            .map(|i| match reader.record(i).unwrap().body {
                RecordBody::Lifecycle(l) => l.message,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            messages,
            ["input", "output 1", "output 2", "next input", "output 3"]
        );
    }

    const FULL_DISK_DIR: &str = "VGT_SINK_FULL_DISK_DIR";

    #[test]
    fn crash_safe_full_disk_is_a_write_error_and_the_file_keeps_every_record_before_it() {
        full_disk(
            SyncMode::CrashSafe,
            "sink::tests::crash_safe_full_disk_is_a_write_error_and_the_file_keeps_every_record_before_it",
        );
    }

    #[test]
    fn buffered_full_disk_is_a_write_error_and_the_file_keeps_whole_buffers_before_it() {
        full_disk(
            SyncMode::Buffered,
            "sink::tests::buffered_full_disk_is_a_write_error_and_the_file_keeps_whole_buffers_before_it",
        );
    }

    /// Records 1 MiB blobs into a file system that is full at 20 MiB: the error is reported,
    /// finishing fails, and the file is cut to what was written, readable, nothing damaged.
    /// Crash-safe mode reports the error on the append that hit it, so the file holds every
    /// record appended before; buffered mode reports it on a later call, so the file holds the
    /// records of the buffers the writer thread wrote.
    fn full_disk(mode: SyncMode, test: &str) {
        let Some(dir) = std::env::var_os(FULL_DISK_DIR) else {
            // The limit is process-wide: the test runs again, alone, in a child.
            let dir = tempfile::tempdir().unwrap();
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", test, "--nocapture", "--test-threads=1"])
                .env(FULL_DISK_DIR, dir.path())
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{said}");
            let ok: u64 = std::fs::read_to_string(dir.path().join("ok"))
                .unwrap()
                .parse()
                .unwrap();
            assert!(ok > 0, "{said}");
            let reader =
                vgt_format::file::CaptureReader::open(dir.path().join("full.vgt")).unwrap();
            let h = reader.health();
            // Cut to the bytes written before the error: unfinished, nothing damaged (the blob
            // whose data failed may have its header there, a cut as with write(2)).
            assert!(
                h.corrupt.is_empty() && !h.indexed && h.zero_tail == 0,
                "{h:?}"
            );
            if mode == SyncMode::CrashSafe {
                assert_eq!(reader.len(), ok);
            } else {
                // Whole 4 MiB buffers of 1 MiB blobs reached the file before the one that
                // failed: at least the records of the first 16 MiB.
                assert!(
                    reader.len() >= 12 && reader.len() <= ok,
                    "{} of {ok}",
                    reader.len()
                );
            }
            return;
        };
        // In the child: RLIMIT_FSIZE plays a disk that is full at 20 MiB (fallocate past it
        // fails with EFBIG as it fails with ENOSPC on a full disk).
        // SAFETY: signal(2) sets this process's disposition of SIGXFSZ (to ignore: the failing
        // call returns EFBIG instead of killing us); no handler code is installed.
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
        let limit = libc::rlimit {
            rlim_cur: 20 << 20,
            rlim_max: 20 << 20,
        };
        // SAFETY: setrlimit(2) reads the struct we pass for the duration of the call.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit) }, 0);
        let dir = PathBuf::from(dir);
        let mut sink = open_file(&dir.join("full.vgt"), mode).unwrap();
        let mut ok = 0u64;
        let err = loop {
            let blob = crate::noise(1 << 20, ok);
            let r = sink
                .store(&blob)
                .and_then(|_| sink.append(&lifecycle("after a blob")));
            match r {
                Ok(_) => ok += 1,
                Err(e) => break e,
            }
            assert!(ok < 40, "no error past the limit");
        };
        println!("error after {ok} records: {err}");
        assert!(err.to_string().contains("File too large"), "{err}");
        assert!(sink.finish().is_err(), "the writer failed");
        std::fs::write(dir.join("ok"), ok.to_string()).unwrap();
    }

    #[test]
    fn crash_safe_file_that_cannot_be_mapped_is_written_with_write() {
        // /dev/null has no blocks to reserve: the write(2) path takes it, and works.
        let mut sink = open_file(Path::new("/dev/null"), SyncMode::CrashSafe).unwrap();
        for _ in 0..3 {
            sink.append(&lifecycle("input")).unwrap();
        }
        let written = sink.bytes_written();
        assert!(written > 3 * 20, "{written}");
        sink.finish().unwrap();
    }

    #[test]
    fn buffered_file_on_a_device_is_written_with_write() {
        // /dev/null is no regular file: neither O_DIRECT nor a mapping; write(2) takes it.
        let mut sink = open_file(Path::new("/dev/null"), SyncMode::Buffered).unwrap();
        sink.store(&crate::noise(5 << 20, 2)).unwrap();
        sink.append(&lifecycle("input")).unwrap();
        sink.flush().unwrap();
        assert!(sink.bytes_written() > 5 << 20);
        sink.finish().unwrap();
    }

    #[test]
    fn buffered_flush_returns_with_every_byte_in_the_file_also_with_blobs_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.vgt");
        let mut sink = open_file(&path, SyncMode::Buffered).unwrap();
        // Every record appended so far, read back with read(2) from the file as it is (mapped:
        // reserved space ahead, zero padding after the bytes written).
        let in_file = |path: &Path, written: u64| {
            let bytes = std::fs::read(path).unwrap();
            assert!(bytes.len() as u64 >= written, "{} < {written}", bytes.len());
            assert!(
                bytes[written as usize..].iter().all(|b| *b == 0),
                "only zeros after"
            );
            messages_in_file(path).len()
        };
        // 12 MiB of incompressible bytes: whole buffers go to the writer thread.
        let blob = crate::noise(12 << 20, 0);
        for round in 0..3 {
            sink.store(&blob[round..]).unwrap();
            sink.append(&lifecycle("after a blob")).unwrap();
            sink.flush().unwrap();
            assert_eq!(
                in_file(&path, sink.bytes_written()),
                2 * round + 1,
                "round {round}"
            );
            // Small records with nothing in flight: written on this thread.
            sink.append(&lifecycle("small")).unwrap();
            sink.flush().unwrap();
            let n = in_file(&path, sink.bytes_written());
            assert_eq!(n, 2 * round + 2, "round {round}, small");
        }
        sink.append(&lifecycle("handed over")).unwrap();
        sink.hand_over().unwrap();
        let written = sink.bytes_written();
        sink.finish().unwrap();
        let reader = vgt_format::file::CaptureReader::open(&path).unwrap();
        assert!(reader.health().is_clean(), "{:?}", reader.health());
        assert_eq!(reader.len(), 7);
        assert!(on_disk(&path) > written, "the index and footer follow");
        assert!(written > 36 << 20, "the blobs are in");
    }

    /// Appends 100 records and a blob, flushes, and leaks the sink, as a killed process
    /// would (neither finish nor any drop runs); the file's bytes and the bytes written.
    fn killed_buffered_capture(path: &Path, direct_io: bool) -> (Vec<u8>, u64) {
        let mut sink =
            open_file_as(path, SyncMode::Buffered, Compression::None, direct_io).unwrap();
        for i in 0..100 {
            sink.append(&lifecycle(&format!("record {i}"))).unwrap();
            if i == 50 {
                // More than a hand-over buffer, with a length that is no multiple of 4 KiB.
                sink.store(&crate::noise((5 << 20) + 3, 1)).unwrap();
            }
        }
        sink.flush().unwrap();
        let written = sink.bytes_written();
        std::mem::forget(sink);
        (std::fs::read(path).unwrap(), written)
    }

    #[test]
    fn buffered_file_killed_before_finishing_is_exactly_what_was_written_and_reads_to_its_last_record()
     {
        // With O_DIRECT (the temporary directory is on a disk file system here): no space is
        // reserved ahead, so the file ends at the last byte written.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.vgt");
        let (bytes, written) = killed_buffered_capture(&path, true);
        assert_eq!(bytes.len() as u64, written, "the file is what was written");
        let reader = vgt_format::file::CaptureReader::from_bytes(bytes).unwrap();
        assert!(reader.health().corrupt.is_empty(), "{:?}", reader.health());
        assert_eq!(reader.len(), 100);
    }

    #[test]
    fn buffered_mapped_file_killed_before_finishing_ends_in_zero_padding_and_reads_to_its_last_record()
     {
        // Where O_DIRECT is refused: the mapped file, with space reserved ahead.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.vgt");
        let (bytes, written) = killed_buffered_capture(&path, false);
        assert!(bytes.len() as u64 > written, "space reserved ahead");
        assert!(bytes[written as usize..].iter().all(|b| *b == 0));
        let reader = vgt_format::file::CaptureReader::from_bytes(bytes).unwrap();
        assert!(reader.health().corrupt.is_empty(), "{:?}", reader.health());
        assert_eq!(reader.len(), 100);
    }
}
