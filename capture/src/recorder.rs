//! The shared, thread-safe front of the capture file: every thread of a session (the vhost-user
//! relay, the queue worker, the main loop) appends through one [`Recorder`], which stamps
//! records with the session clock and keeps the counters the status line shows.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Instant;

use vgt_format::record::{
    ContentHash, Lifecycle, LifecycleKind, Payload, Record, RecordBody, RecordId,
};

/// Where records go: the capture file writer, or (in tests) memory.
pub trait RecordSink: Send {
    /// Stores a byte string, returning the payload to put in a record (deduplicated by content).
    fn store(&mut self, bytes: &[u8]) -> Result<Payload, SinkError>;
    /// Appends one record, returning its id. In crash-safe mode its bytes (and those of every
    /// record before it) reach the operating system before this returns.
    fn append(&mut self, record: &Record) -> Result<RecordId, SinkError>;
    /// Appends a record of what the device did while executing a command that is already
    /// recorded (a response, frame, display message, cursor, fence). Crash-safe sinks may keep
    /// it buffered until the next [`RecordSink::append`] or [`RecordSink::sync_outputs`], so
    /// that one command's records cost one write(2); file order is unchanged.
    fn append_output(&mut self, record: &Record) -> Result<RecordId, SinkError> {
        self.append(record)
    }
    /// Hands records kept back by [`RecordSink::append_output`] to the operating system.
    fn sync_outputs(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    /// Hands buffered bytes to the operating system: they have reached it when this returns.
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    /// Starts handing buffered bytes to the operating system without waiting for them (the
    /// periodic flush of buffered mode, which bounds what a crash loses). Default: `flush`.
    fn hand_over(&mut self) -> Result<(), SinkError> {
        self.flush()
    }
    /// Writes the index and closes the file.
    fn finish(self: Box<Self>) -> Result<(), SinkError>;
    /// Bytes written so far.
    fn bytes_written(&self) -> u64;
}

/// A sink failure, with the underlying cause.
#[derive(Debug, thiserror::Error)]
#[error("capture file: {detail}")]
pub struct SinkError {
    /// What failed, in words (the cause's text).
    pub detail: String,
    /// The cause.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SinkError {
    /// Wraps any error.
    pub fn wrap<E: std::error::Error + Send + Sync + 'static>(e: E) -> Self {
        SinkError {
            detail: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
}

/// Errors from the [`Recorder`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The capture was already finished (a late event after shutdown).
    #[error("the capture is already finished")]
    Finished,
}

/// Counters for the status line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Records appended.
    pub records: u64,
    /// Command records.
    pub commands: u64,
    /// Frame records.
    pub frames: u64,
    /// Validation errors recorded.
    pub validation_errors: u64,
    /// Bytes passed to `store`.
    pub payload_bytes: u64,
    /// Of those, bytes whose content was new (first time seen).
    pub unique_payload_bytes: u64,
    /// Bytes written to the file.
    pub file_bytes: u64,
}

impl RecorderStats {
    /// Payload bytes offered per unique byte kept (1.0 when nothing repeated).
    pub fn dedup_ratio(&self) -> f64 {
        if self.unique_payload_bytes == 0 {
            1.0
        } else {
            self.payload_bytes as f64 / self.unique_payload_bytes as f64
        }
    }
}

struct Inner {
    sink: Option<Box<dyn RecordSink>>,
    stats: RecorderStats,
    seen: HashSet<ContentHash>,
}

/// Thread-safe record appender with a session clock.
pub struct Recorder {
    start: Instant,
    inner: Mutex<Inner>,
}

impl Recorder {
    /// A recorder over `sink`; time 0 is now.
    pub fn new(sink: Box<dyn RecordSink>) -> Self {
        Recorder {
            start: Instant::now(),
            inner: Mutex::new(Inner {
                sink: Some(sink),
                stats: RecorderStats::default(),
                seen: HashSet::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the sink half-updated in a way we could
        // repair; keep using it (the writer itself refuses to continue after a failed write).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Nanoseconds since the session started.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Stores bytes as a payload.
    pub fn store(&self, bytes: &[u8]) -> Result<Payload, RecordError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let sink = inner.sink.as_mut().ok_or(RecordError::Finished)?;
        let payload = sink.store(bytes)?;
        inner.stats.payload_bytes += bytes.len() as u64;
        match &payload {
            Payload::Blob(r) => {
                if inner.seen.insert(r.hash) {
                    inner.stats.unique_payload_bytes += r.len;
                }
            }
            Payload::Inline(b) => inner.stats.unique_payload_bytes += b.len() as u64,
        }
        Ok(payload)
    }

    /// Appends a record body stamped with the current time (in crash-safe mode written to the
    /// operating system, with everything before it, before this returns).
    pub fn append(&self, body: RecordBody) -> Result<RecordId, RecordError> {
        self.append_as(body, false)
    }

    /// Appends a record of what the device did while executing an already recorded command
    /// (response, frame, display message, cursor, fence). In crash-safe mode it may stay in
    /// the buffer until the next [`Recorder::append`] or [`Recorder::sync_outputs`]; the
    /// built-in backend calls the latter before it tells the guest about used buffers.
    pub fn append_output(&self, body: RecordBody) -> Result<RecordId, RecordError> {
        self.append_as(body, true)
    }

    /// Hands the records kept back by [`Recorder::append_output`] to the operating system
    /// (nothing to do in buffered mode, whose buffer is flushed periodically).
    pub fn sync_outputs(&self) -> Result<(), RecordError> {
        let mut inner = self.lock();
        let sink = inner.sink.as_mut().ok_or(RecordError::Finished)?;
        sink.sync_outputs()?;
        Ok(())
    }

    fn append_as(&self, body: RecordBody, output: bool) -> Result<RecordId, RecordError> {
        let mut inner = self.lock();
        let ts_ns = self.now_ns();
        let sink = inner.sink.as_mut().ok_or(RecordError::Finished)?;
        let counted = match &body {
            RecordBody::Command(_) => (1, 0, 0),
            RecordBody::Frame(_) => (0, 1, 0),
            RecordBody::Lifecycle(l) if l.kind == LifecycleKind::ValidationError => (0, 0, 1),
            _ => (0, 0, 0),
        };
        let record = Record { ts_ns, body };
        let id = if output {
            sink.append_output(&record)?
        } else {
            sink.append(&record)?
        };
        let file_bytes = sink.bytes_written();
        let s = &mut inner.stats;
        s.records += 1;
        s.commands += counted.0;
        s.frames += counted.1;
        s.validation_errors += counted.2;
        s.file_bytes = file_bytes;
        Ok(id)
    }

    /// Appends a lifecycle record.
    pub fn lifecycle(
        &self,
        kind: LifecycleKind,
        queue: Option<u16>,
        command: Option<RecordId>,
        message: impl Into<String>,
    ) -> Result<RecordId, RecordError> {
        self.append(RecordBody::Lifecycle(Lifecycle {
            kind,
            queue,
            command,
            message: message.into(),
        }))
    }

    /// Current counters.
    pub fn stats(&self) -> RecorderStats {
        let inner = self.lock();
        let mut s = inner.stats;
        if let Some(sink) = &inner.sink {
            s.file_bytes = sink.bytes_written();
        }
        s
    }

    /// Starts writing the sink's buffer without waiting for it ([`RecordSink::hand_over`]).
    pub fn hand_over(&self) -> Result<(), RecordError> {
        let mut inner = self.lock();
        let sink = inner.sink.as_mut().ok_or(RecordError::Finished)?;
        sink.hand_over()?;
        Ok(())
    }

    /// Flushes the sink's buffer: its bytes have reached the operating system on return.
    pub fn flush(&self) -> Result<(), RecordError> {
        let mut inner = self.lock();
        let sink = inner.sink.as_mut().ok_or(RecordError::Finished)?;
        sink.flush()?;
        Ok(())
    }

    /// True once [`Recorder::finish`] ran.
    pub fn is_finished(&self) -> bool {
        self.lock().sink.is_none()
    }

    /// Records `End`, writes the index and closes the file. Later appends fail with
    /// [`RecordError::Finished`]; a second call does nothing.
    pub fn finish(&self, message: &str) -> Result<(), RecordError> {
        let mut inner = self.lock();
        let ts_ns = self.now_ns();
        let Some(mut sink) = inner.sink.take() else {
            return Ok(());
        };
        let end = Record {
            ts_ns,
            body: RecordBody::Lifecycle(Lifecycle {
                kind: LifecycleKind::End,
                queue: None,
                command: None,
                message: message.to_owned(),
            }),
        };
        let appended = sink.append(&end);
        inner.stats.file_bytes = sink.bytes_written();
        let finished = sink.finish();
        appended?;
        finished?;
        Ok(())
    }
}
