//! Crash-safe recording with one write per batch for the proxy's queue worker.
//!
//! Crash-safe sync promises that a record reaches the operating system before the outside world
//! can act on what it describes: a Command before the backend can see the chain, a Response
//! before the guest can see the used entry. The queue worker moves chains in batches, so it
//! needs one write per batch at those two points, not one per record. [`BarrierSink`] wraps the
//! file sink (the mapped file of crash-safe mode, flushed only when asked:
//! [`crate::sink::open_file_flushed_by_caller`], so a "write" is a copy into the page cache)
//! and hands every record to the operating system at once, as
//! crash-safe mode does, except on threads that called [`defer_flushes_on_this_thread`]: the
//! queue worker, which flushes itself at each barrier (`ProxyState::barrier`). Every other
//! thread (vhost-user relay, display socket, backend channel) keeps one write per record.

use std::cell::Cell;

use vgt_format::record::{Payload, Record, RecordId};

use crate::recorder::{RecordSink, SinkError};

thread_local! {
    /// Set on the queue worker thread: its records are flushed at barriers.
    static DEFERRED: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as one that flushes at its own barriers (the queue worker).
pub fn defer_flushes_on_this_thread() {
    DEFERRED.with(|d| d.set(true));
}

/// A sink that flushes after every record except on deferring threads (see the module docs).
pub struct BarrierSink {
    inner: Box<dyn RecordSink>,
}

impl BarrierSink {
    /// Wraps `inner` (a file sink that flushes only when asked) and flushes what it holds already (the header).
    pub fn new(mut inner: Box<dyn RecordSink>) -> Result<Self, SinkError> {
        inner.flush()?;
        Ok(BarrierSink { inner })
    }
}

impl RecordSink for BarrierSink {
    fn store(&mut self, bytes: &[u8]) -> Result<Payload, SinkError> {
        self.inner.store(bytes)
    }

    fn append(&mut self, record: &Record) -> Result<RecordId, SinkError> {
        let id = self.inner.append(record)?;
        if !DEFERRED.with(Cell::get) {
            self.inner.flush()?;
        }
        Ok(id)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.inner.flush()
    }

    fn finish(self: Box<Self>) -> Result<(), SinkError> {
        self.inner.finish()
    }

    fn bytes_written(&self) -> u64 {
        self.inner.bytes_written()
    }
}
