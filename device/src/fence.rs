//! Fence timelines: completions held back until their fence signals.

use std::collections::{HashMap, VecDeque};

use vgt_format::wire::FLAG_INFO_RING_IDX;

use crate::{Completion, FenceInfo};

/// A fence timeline: the global one, or one ring of one context (`FLAG_INFO_RING_IDX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ring {
    /// Fences without `FLAG_INFO_RING_IDX`.
    Global,
    /// A per-context ring.
    Context {
        /// The context.
        ctx_id: u32,
        /// The ring inside it (0..64).
        ring_idx: u8,
    },
}

impl Ring {
    /// The timeline a fence belongs to.
    pub fn of(fence: &FenceInfo) -> Ring {
        if fence.flags & FLAG_INFO_RING_IDX != 0 {
            Ring::Context {
                ctx_id: fence.ctx_id,
                ring_idx: fence.ring_idx,
            }
        } else {
            Ring::Global
        }
    }
}

#[derive(Debug)]
struct Pending {
    fence_id: u64,
    completion: Completion,
}

/// Completions waiting for their fence, per timeline, in submission order.
#[derive(Debug, Default)]
pub(crate) struct Timelines {
    pending: HashMap<Ring, VecDeque<Pending>>,
}

impl Timelines {
    /// Holds `completion` back until a fence `>= fence_id` signals on `ring`.
    pub(crate) fn hold(&mut self, ring: Ring, fence_id: u64, completion: Completion) {
        self.pending.entry(ring).or_default().push_back(Pending {
            fence_id,
            completion,
        });
    }

    /// Fence `fence_id` signalled on `ring`: releases, in submission order, every completion on
    /// that ring whose fence id is `<= fence_id` (the spec's rule: a signalled fence completes
    /// all earlier ones of its timeline).
    pub(crate) fn signal(&mut self, ring: Ring, fence_id: u64, out: &mut Vec<Completion>) {
        let Some(queue) = self.pending.get_mut(&ring) else {
            return;
        };
        let mut kept = VecDeque::with_capacity(queue.len());
        for p in queue.drain(..) {
            if p.fence_id <= fence_id {
                out.push(p.completion);
            } else {
                kept.push_back(p);
            }
        }
        *queue = kept;
        if queue.is_empty() {
            self.pending.remove(&ring);
        }
    }

    /// Completions still waiting.
    pub(crate) fn len(&self) -> usize {
        self.pending.values().map(VecDeque::len).sum()
    }

    /// Drops everything (device reset).
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(token: u64) -> Completion {
        Completion {
            token,
            response: vec![token as u8],
        }
    }

    fn tokens(v: &[Completion]) -> Vec<u64> {
        v.iter().map(|c| c.token).collect()
    }

    #[test]
    fn signal_releases_all_lower_or_equal_on_same_ring_only() {
        let mut t = Timelines::default();
        let r1 = Ring::Context {
            ctx_id: 1,
            ring_idx: 0,
        };
        let r2 = Ring::Context {
            ctx_id: 1,
            ring_idx: 1,
        };
        t.hold(Ring::Global, 5, c(1));
        t.hold(r1, 3, c(2));
        t.hold(r1, 4, c(3));
        t.hold(r1, 9, c(4));
        t.hold(r2, 1, c(5));
        let mut out = Vec::new();
        t.signal(r1, 4, &mut out);
        assert_eq!(tokens(&out), vec![2, 3]);
        assert_eq!(t.len(), 3);
        out.clear();
        t.signal(Ring::Global, 4, &mut out);
        assert!(out.is_empty());
        t.signal(Ring::Global, 7, &mut out);
        assert_eq!(tokens(&out), vec![1]);
        out.clear();
        t.signal(r2, 1, &mut out);
        t.signal(r1, 9, &mut out);
        assert_eq!(tokens(&out), vec![5, 4]);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn ring_of_fence_without_ring_flag_is_global() {
        let f = FenceInfo {
            flags: 1,
            fence_id: 3,
            ctx_id: 7,
            ring_idx: 2,
        };
        assert_eq!(Ring::of(&f), Ring::Global);
        let f = FenceInfo { flags: 3, ..f };
        assert_eq!(
            Ring::of(&f),
            Ring::Context {
                ctx_id: 7,
                ring_idx: 2
            }
        );
    }
}
