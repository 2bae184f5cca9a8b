//! Guest backing of a resource: its scatter list, and reading exactly the bytes a command uses.

use vgt_format::wire::MemEntry;

use crate::{DeviceHost, GuestMemory, ValidationError};

/// A resource's scatter list with the backing offset at which each entry starts.
#[derive(Debug, Clone)]
pub(crate) struct Backing {
    entries: Vec<MemEntry>,
    /// `starts[i]` is the backing offset of `entries[i]`.
    starts: Vec<u64>,
    total: u64,
}

/// Bytes to read: `rows` rows of `row_len` bytes, row `r` at backing offset
/// `first + r * stride`, landing at `dst_first + r * dst_stride` of the destination.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowRead {
    pub first: u64,
    pub row_len: u64,
    pub stride: u64,
    pub rows: u32,
    pub dst_first: usize,
    pub dst_stride: usize,
}

/// A contiguous guest range waiting to be read: guest address, destination offset, length.
#[derive(Debug, Clone, Copy)]
struct Run {
    addr: u64,
    dst: usize,
    len: usize,
}

impl Backing {
    /// Builds the scatter list; the caller has checked that no entry wraps around.
    pub(crate) fn new(entries: Vec<MemEntry>) -> Backing {
        let mut starts = Vec::with_capacity(entries.len());
        let mut total = 0u64;
        for e in &entries {
            starts.push(total);
            total = total.saturating_add(u64::from(e.length));
        }
        Backing {
            entries,
            starts,
            total,
        }
    }

    /// Sum of the entry lengths.
    pub(crate) fn len(&self) -> u64 {
        self.total
    }

    /// Reads the rows described by `plan` from guest memory into `dst`, one `mem.read` and one
    /// `host.numbered_memory_read` per maximal run that is contiguous both in guest memory and
    /// in `dst`; `reads` is the number of the next read, counted up for each.
    pub(crate) fn read_rows(
        &self,
        plan: RowRead,
        dst: &mut [u8],
        resource_id: u32,
        mem: &dyn GuestMemory,
        host: &mut dyn DeviceHost,
        reads: &mut u64,
    ) -> Result<(), ValidationError> {
        let outside = |offset: u64| ValidationError::TransferOutsideBacking {
            resource_id,
            offset,
            end: None,
            backing_len: self.total,
        };
        let mut pending: Option<Run> = None;
        for r in 0..u64::from(plan.rows) {
            let mut boff = r
                .checked_mul(plan.stride)
                .and_then(|o| o.checked_add(plan.first))
                .ok_or_else(|| outside(plan.first))?;
            let mut doff = usize::try_from(r)
                .ok()
                .and_then(|r| r.checked_mul(plan.dst_stride))
                .and_then(|o| o.checked_add(plan.dst_first))
                .ok_or_else(|| outside(plan.first))?;
            let mut remaining = plan.row_len;
            // Last entry starting at or before `boff`.
            let mut idx = self
                .starts
                .partition_point(|&s| s <= boff)
                .saturating_sub(1);
            while remaining > 0 {
                let (Some(entry), Some(&start)) = (self.entries.get(idx), self.starts.get(idx))
                else {
                    return Err(outside(boff));
                };
                let within = boff.checked_sub(start).ok_or_else(|| outside(boff))?;
                let avail = u64::from(entry.length).saturating_sub(within);
                if avail == 0 {
                    idx += 1;
                    continue;
                }
                let n = avail.min(remaining);
                let n_usize = usize::try_from(n).map_err(|_| outside(boff))?;
                let addr = entry.addr.wrapping_add(within);
                pending = match pending {
                    Some(p)
                        if p.addr.checked_add(p.len as u64) == Some(addr)
                            && p.dst.checked_add(p.len) == Some(doff) =>
                    {
                        Some(Run {
                            len: p.len + n_usize,
                            ..p
                        })
                    }
                    other => {
                        if let Some(p) = other {
                            flush(p, dst, resource_id, mem, host, reads)?;
                        }
                        Some(Run {
                            addr,
                            dst: doff,
                            len: n_usize,
                        })
                    }
                };
                boff += n;
                doff += n_usize;
                remaining -= n;
                idx += 1;
            }
        }
        if let Some(p) = pending {
            flush(p, dst, resource_id, mem, host, reads)?;
        }
        Ok(())
    }
}

/// Reads one run into `dst` and reports it.
fn flush(
    run: Run,
    dst: &mut [u8],
    resource_id: u32,
    mem: &dyn GuestMemory,
    host: &mut dyn DeviceHost,
    reads: &mut u64,
) -> Result<(), ValidationError> {
    let end = run.dst.checked_add(run.len);
    let Some(slice) = end.and_then(|e| dst.get_mut(run.dst..e)) else {
        return Err(ValidationError::MemoryRead {
            resource_id,
            source: crate::MemoryError::OutOfRange {
                addr: run.addr,
                len: run.len as u64,
            },
        });
    };
    mem.read(run.addr, slice)
        .map_err(|source| ValidationError::MemoryRead {
            resource_id,
            source,
        })?;
    host.numbered_memory_read(*reads, resource_id, run.addr, slice);
    *reads += 1;
    Ok(())
}
