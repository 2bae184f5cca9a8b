//! The guest view the checks fold commands into: resources, contexts, scanouts and mapped blobs
//! as the driver believes them to be, with the records that created and destroyed them.

use std::collections::{BTreeMap, HashMap};

use vgt_format::record::RecordId;

/// How a resource was created, with what the checks need of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResKind {
    TwoD,
    ThreeD {
        depth: u32,
        array_size: u32,
        last_level: u32,
    },
    Blob {
        mem: u32,
        flags: u32,
        size: u64,
    },
}

/// A live resource.
#[derive(Debug, Clone)]
pub(crate) struct Res {
    pub kind: ResKind,
    pub bpp: Option<u32>,
    pub width: u32,
    pub height: u32,
    /// Bytes of guest backing attached.
    pub backing: u64,
    /// The record that attached the backing (None when none is attached).
    pub backing_at: Option<RecordId>,
    /// Scanouts showing it, with the record that set each.
    pub scanouts: Vec<(u32, RecordId)>,
    /// Offset in the host-visible region and the mapping record.
    pub mapped: Option<(u64, RecordId)>,
    pub created_at: RecordId,
    /// The last command that named it.
    pub last_use: RecordId,
    /// Shown on a scanout at some point (a framebuffer, perhaps the idle one of a flip pair).
    pub ever_shown: bool,
}

impl Res {
    fn host_bytes(&self) -> u64 {
        match self.kind {
            ResKind::Blob { size, .. } => size,
            ResKind::ThreeD {
                depth, array_size, ..
            } => {
                // Saturating: guest-chosen sizes can exceed 64 bits.
                (u64::from(self.width) * u64::from(self.height))
                    .saturating_mul(u64::from(self.bpp.unwrap_or(4)))
                    .saturating_mul(u64::from(depth.max(1)))
                    .saturating_mul(u64::from(array_size.max(1)))
            }
            ResKind::TwoD => (u64::from(self.width) * u64::from(self.height))
                .saturating_mul(u64::from(self.bpp.unwrap_or(4))),
        }
    }
}

/// What a lookup of an id found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    Live,
    Retired {
        destroyed_at: RecordId,
        reason: &'static str,
    },
    Never,
}

#[derive(Debug, Default)]
pub(crate) struct GuestView {
    resources: BTreeMap<u32, Res>,
    retired: HashMap<u32, (RecordId, &'static str)>,
    contexts: HashMap<u32, RecordId>,
    retired_contexts: HashMap<u32, (RecordId, &'static str)>,
    /// What each scanout shows (resource, record that set it).
    scanouts: [(u32, RecordId); 16],
    /// Resources ever used as the cursor image (not leaks when alive at the end).
    pub cursors: std::collections::HashSet<u32>,
    live_bytes: u64,
}

impl GuestView {
    pub fn lookup(&self, res: u32) -> Lookup {
        if self.resources.contains_key(&res) {
            Lookup::Live
        } else if let Some(&(destroyed_at, reason)) = self.retired.get(&res) {
            Lookup::Retired {
                destroyed_at,
                reason,
            }
        } else {
            Lookup::Never
        }
    }

    pub fn lookup_ctx(&self, ctx: u32) -> Lookup {
        if self.contexts.contains_key(&ctx) {
            Lookup::Live
        } else if let Some(&(destroyed_at, reason)) = self.retired_contexts.get(&ctx) {
            Lookup::Retired {
                destroyed_at,
                reason,
            }
        } else {
            Lookup::Never
        }
    }

    pub fn get(&self, res: u32) -> Option<&Res> {
        self.resources.get(&res)
    }

    pub fn get_mut(&mut self, res: u32) -> Option<&mut Res> {
        self.resources.get_mut(&res)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &mut self,
        at: RecordId,
        res: u32,
        kind: ResKind,
        bpp: Option<u32>,
        width: u32,
        height: u32,
        backing: u64,
    ) {
        let r = Res {
            kind,
            bpp,
            width,
            height,
            backing,
            backing_at: (backing > 0).then_some(at),
            scanouts: Vec::new(),
            mapped: None,
            created_at: at,
            last_use: at,
            ever_shown: false,
        };
        self.live_bytes = self.live_bytes.saturating_add(r.host_bytes());
        self.retired.remove(&res);
        self.resources.insert(res, r);
    }

    /// Drops a resource whose creation failed, as if it never existed.
    pub fn forget(&mut self, res: u32) {
        if let Some(r) = self.resources.remove(&res) {
            self.live_bytes = self.live_bytes.saturating_sub(r.host_bytes());
        }
    }

    pub fn destroy(&mut self, res: u32, at: RecordId, reason: &'static str) {
        if let Some(r) = self.resources.remove(&res) {
            self.live_bytes = self.live_bytes.saturating_sub(r.host_bytes());
            for (s, _) in r.scanouts {
                if let Some(slot) = self.scanouts.get_mut(s as usize) {
                    *slot = (0, at);
                }
            }
        }
        self.retired.insert(res, (at, reason));
    }

    pub fn ctx_created_at(&self, ctx: u32) -> Option<RecordId> {
        self.contexts.get(&ctx).copied()
    }

    pub fn create_ctx(&mut self, ctx: u32, at: RecordId) {
        self.retired_contexts.remove(&ctx);
        self.contexts.insert(ctx, at);
    }

    pub fn destroy_ctx(&mut self, ctx: u32, at: RecordId, reason: &'static str) {
        self.contexts.remove(&ctx);
        self.retired_contexts.insert(ctx, (at, reason));
    }

    /// Points `scanout` at `res` (0 disables it).
    pub fn show(&mut self, scanout: u32, res: u32, at: RecordId) {
        let Some(slot) = self.scanouts.get_mut(scanout as usize) else {
            return;
        };
        let previous = slot.0;
        *slot = (res, at);
        if previous != 0
            && let Some(r) = self.resources.get_mut(&previous)
        {
            r.scanouts.retain(|(s, _)| *s != scanout);
        }
        if res != 0
            && let Some(r) = self.resources.get_mut(&res)
        {
            r.scanouts.push((scanout, at));
            r.ever_shown = true;
        }
    }

    /// A device reset destroys everything.
    pub fn reset(&mut self, at: RecordId) {
        let ids: Vec<u32> = self.resources.keys().copied().collect();
        for id in ids {
            self.destroy(id, at, "device reset");
        }
        let ctxs: Vec<u32> = self.contexts.keys().copied().collect();
        for c in ctxs {
            self.destroy_ctx(c, at, "device reset");
        }
        self.scanouts = Default::default();
        self.cursors.clear();
    }

    /// Another live blob mapped over `start..end`: (resource, mapping record, its range).
    pub fn overlapping_map(&self, start: u64, end: u64) -> Option<(u32, RecordId, u64, u64)> {
        self.resources.iter().find_map(|(id, r)| {
            let (off, at) = r.mapped?;
            let size = match r.kind {
                ResKind::Blob { size, .. } => size,
                _ => return None,
            };
            let o_end = off.saturating_add(size);
            (off < end && start < o_end).then_some((*id, at, off, o_end))
        })
    }

    /// (live resources, their host bytes).
    pub fn live(&self) -> (u64, u64) {
        (self.resources.len() as u64, self.live_bytes)
    }

    /// Notes that a command named a live resource.
    pub fn touch(&mut self, res: u32, at: RecordId) {
        if let Some(r) = self.resources.get_mut(&res) {
            r.last_use = at;
        }
    }

    /// Resources alive now that were never shown nor used as the cursor and that no command
    /// named after `stale_before`: (id, created at, last use, host bytes, backing bytes).
    pub fn leaks(&self, stale_before: RecordId) -> Vec<(u32, RecordId, RecordId, u64, u64)> {
        self.resources
            .iter()
            .filter(|(id, r)| {
                !r.ever_shown && !self.cursors.contains(id) && r.last_use < stale_before
            })
            .map(|(id, r)| (*id, r.created_at, r.last_use, r.host_bytes(), r.backing))
            .collect()
    }
}
