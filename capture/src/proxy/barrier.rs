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
    /// Something was stored or appended since the last flush (a barrier with nothing new
    /// costs no system call).
    dirty: bool,
}

impl BarrierSink {
    /// Wraps `inner` (a file sink that flushes only when asked) and flushes what it holds already (the header).
    pub fn new(mut inner: Box<dyn RecordSink>) -> Result<Self, SinkError> {
        inner.flush()?;
        Ok(BarrierSink {
            inner,
            dirty: false,
        })
    }
}

impl RecordSink for BarrierSink {
    fn store(&mut self, bytes: &[u8]) -> Result<Payload, SinkError> {
        self.dirty = true;
        self.inner.store(bytes)
    }

    fn append(&mut self, record: &Record) -> Result<RecordId, SinkError> {
        self.dirty = true;
        let id = self.inner.append(record)?;
        if !DEFERRED.with(Cell::get) {
            self.flush()?;
        }
        Ok(id)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.dirty {
            self.inner.flush()?;
            self.dirty = false;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), SinkError> {
        self.inner.finish()
    }

    fn bytes_written(&self) -> u64 {
        self.inner.bytes_written()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use vgt_format::record::{Lifecycle, LifecycleKind, RecordBody};

    /// Counts the flushes that reach it.
    struct Counting(Arc<AtomicUsize>);

    impl RecordSink for Counting {
        fn store(&mut self, bytes: &[u8]) -> Result<Payload, SinkError> {
            Ok(Payload::Inline(bytes.to_vec()))
        }
        fn append(&mut self, _record: &Record) -> Result<RecordId, SinkError> {
            Ok(0)
        }
        fn flush(&mut self) -> Result<(), SinkError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        fn finish(self: Box<Self>) -> Result<(), SinkError> {
            Ok(())
        }
        fn bytes_written(&self) -> u64 {
            0
        }
    }

    fn record() -> Record {
        Record {
            ts_ns: 0,
            body: RecordBody::Lifecycle(Lifecycle {
                kind: LifecycleKind::Connect,
                queue: None,
                command: None,
                message: String::new(),
            }),
        }
    }

    #[test]
    fn barrier_with_nothing_new_does_not_flush_and_a_deferring_thread_flushes_once_per_batch() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let n = flushes.clone();
        std::thread::spawn(move || {
            defer_flushes_on_this_thread();
            let mut sink = BarrierSink::new(Box::new(Counting(n.clone()))).unwrap();
            assert_eq!(n.load(Ordering::Relaxed), 1);
            sink.append(&record()).unwrap();
            sink.append(&record()).unwrap();
            assert_eq!(n.load(Ordering::Relaxed), 1);
            sink.flush().unwrap();
            assert_eq!(n.load(Ordering::Relaxed), 2);
            // A second barrier right after: nothing to write.
            sink.flush().unwrap();
            assert_eq!(n.load(Ordering::Relaxed), 2);
        })
        .join()
        .unwrap();
        // Any other thread: one flush per record.
        let mut sink = BarrierSink::new(Box::new(Counting(flushes.clone()))).unwrap();
        sink.append(&record()).unwrap();
        sink.flush().unwrap();
        assert_eq!(flushes.load(Ordering::Relaxed), 4);
    }
}
