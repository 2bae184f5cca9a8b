//! Which guest command a display message came from.
//!
//! The display socket does not say which command made the backend send a SCANOUT, an UPDATE
//! or a cursor message, and the proxy takes chains from the guest ahead of the backend: with a
//! guest that queues several commands, the command taken last is often not the one the backend
//! is executing. Backends execute each queue in order, so the proxy keeps, per queue, the
//! commands taken that can produce display messages, in order, and gives each message to the
//! first of them that could have produced it; the ones before it are done (they produced what
//! they were going to). Frame and Cursor records name the command found; a message no pending
//! command explains (a backend that redraws on its own, a queue cut short) names the last
//! command taken, as before. docs/PROXY.md ("Which command showed a frame") has the rules.
//!
//! The rules follow what the backends do: QEMU's vhost-user-gpu sends one SCANOUT per valid
//! SET_SCANOUT (none for a disable of a disabled scanout) and one UPDATE per scanout showing
//! the flushed resource, the flush rectangle clipped to the scanout; vhost-device-gpu's
//! gfxstream mode sends the whole resource on each flush and one more after SET_SCANOUT.

use std::collections::VecDeque;

use vgt_format::RecordId;

/// Scanouts virtio-gpu can have (16); messages about others match nothing.
const SCANOUTS: usize = 16;

/// Commands kept per queue; the oldest go first past this (a backend that never sends display
/// messages, e.g. one without a display socket).
pub const MAX_PENDING: usize = 4096;

/// A command that can make the backend send display messages, as taken from the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// RESOURCE_FLUSH of a resource the proxy knows, its rectangle inside the resource.
    Flush {
        /// The flushed resource.
        resource: u32,
        /// The flushed rectangle (x, y, width, height).
        rect: [u32; 4],
        /// The resource's size, when known (0x0 for a blob).
        size: [u32; 2],
    },
    /// SET_SCANOUT or SET_SCANOUT_BLOB that the backend accepts (resource 0: disable).
    Scanout {
        /// The scanout.
        scanout: u32,
        /// The resource shown (0: the scanout is disabled).
        resource: u32,
        /// The scanout rectangle's size.
        size: [u32; 2],
    },
    /// RESOURCE_UNREF: the scanouts showing the resource are disabled.
    Unref {
        /// The resource released.
        resource: u32,
    },
    /// MOVE_CURSOR or UPDATE_CURSOR.
    Cursor {
        /// UPDATE_CURSOR (a new image) rather than MOVE_CURSOR.
        update: bool,
        /// The cursor's scanout.
        scanout: u32,
        /// Its position.
        pos: [u32; 2],
        /// The cursor image's resource (0: hidden).
        resource: u32,
    },
}

impl Cause {
    /// The resource the command shows (0 for an unref: what it shows is nothing).
    fn resource(&self) -> u32 {
        match *self {
            Cause::Flush { resource, .. }
            | Cause::Scanout { resource, .. }
            | Cause::Cursor { resource, .. } => resource,
            Cause::Unref { .. } => 0,
        }
    }
}

/// A cursor message of the display socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorMessage {
    /// CURSOR_POS.
    Pos,
    /// CURSOR_POS_HIDE.
    Hide,
    /// CURSOR_UPDATE.
    Update,
}

impl CursorMessage {
    fn bit(self) -> u32 {
        match self {
            CursorMessage::Pos => 1,
            CursorMessage::Hide => 2,
            CursorMessage::Update => 4,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    record: RecordId,
    cause: Cause,
    /// Messages already given to this command: per scanout for a flush's updates; for a
    /// scanout change, [`SCANOUT_SERVED`] and [`UPDATE_SERVED`]; per [`CursorMessage`] for a
    /// cursor command; bit 0 for an unref.
    served: u32,
}

const SCANOUT_SERVED: u32 = 1;
const UPDATE_SERVED: u32 = 2;

/// The pending commands of both queues and the resource each scanout shows once the commands
/// before them ran.
#[derive(Debug, Default)]
pub struct DisplayCauses {
    pending: [VecDeque<Pending>; 2],
    /// Resource per scanout after the commands no longer pending (0: none).
    shown: [u32; SCANOUTS],
}

fn apply(shown: &mut [u32; SCANOUTS], cause: &Cause) {
    match *cause {
        Cause::Scanout {
            scanout, resource, ..
        } => {
            if let Some(s) = shown.get_mut(scanout as usize) {
                *s = resource;
            }
        }
        Cause::Unref { resource } if resource != 0 => {
            for s in shown.iter_mut().filter(|s| **s == resource) {
                *s = 0;
            }
        }
        _ => {}
    }
}

/// Whether an update of `rect` can come from a flush of `flush` on a resource of `size`: inside
/// the flushed rectangle (QEMU's backend clips it to the scanout), empty (a flush outside the
/// scanout), or the whole resource (backends that send the whole resource on every flush).
fn update_fits(rect: [u32; 4], flush: [u32; 4], size: [u32; 2]) -> bool {
    let [x, y, w, h] = rect.map(u64::from);
    let [fx, fy, fw, fh] = flush.map(u64::from);
    w == 0
        || h == 0
        || (x >= fx && y >= fy && x + w <= fx + fw && y + h <= fy + fh)
        || (size != [0, 0] && rect == [0, 0, size[0], size[1]])
}

impl DisplayCauses {
    /// A command taken from the guest on `queue` (0: control, 1: cursor) that can make the
    /// backend send display messages.
    pub fn push(&mut self, queue: u16, record: RecordId, cause: Cause) {
        let Some(q) = self.pending.get_mut(usize::from(queue)) else {
            return;
        };
        if q.len() >= MAX_PENDING
            && let Some(old) = q.pop_front()
        {
            apply(&mut self.shown, &old.cause);
        }
        q.push_back(Pending {
            record,
            cause,
            served: 0,
        });
    }

    /// The queue starts again (SET_VRING_BASE): its chains are taken again, so what was
    /// pending goes (the scanouts keep what they show).
    pub fn clear(&mut self, queue: u16) {
        if let Some(q) = self.pending.get_mut(usize::from(queue)) {
            q.clear();
        }
    }

    /// The commands before pending entry `i` of `queue` are done.
    fn retire_before(&mut self, queue: usize, i: usize) {
        for p in self.pending[queue].drain(..i) {
            apply(&mut self.shown, &p.cause);
        }
    }

    /// SCANOUT, DMABUF_SCANOUT or DMABUF_SCANOUT2 for `scanout`, `size` 0x0 for a disable: the
    /// command that set it up or took it down, and the resource it shows (0 for a disable).
    pub fn scanout(&mut self, scanout: u32, size: [u32; 2]) -> Option<(RecordId, u32)> {
        let disable = size[0] == 0 || size[1] == 0;
        let s = scanout as usize;
        if s >= SCANOUTS {
            return None;
        }
        let mut shown = self.shown;
        let mut found = None;
        for (i, p) in self.pending[0].iter().enumerate() {
            let fits = match p.cause {
                Cause::Scanout {
                    scanout: ps,
                    resource,
                    size: ps_size,
                } => {
                    ps == scanout
                        && p.served & SCANOUT_SERVED == 0
                        && if disable {
                            resource == 0
                        } else {
                            resource != 0 && ps_size == size
                        }
                }
                Cause::Unref { resource } => {
                    disable && p.served == 0 && resource != 0 && shown[s] == resource
                }
                _ => false,
            };
            if fits {
                found = Some(i);
                break;
            }
            apply(&mut shown, &p.cause);
        }
        let i = found?;
        self.pending[0][i].served |= SCANOUT_SERVED;
        self.retire_before(0, i);
        let p = self.pending[0][0];
        Some((p.record, p.cause.resource()))
    }

    /// UPDATE or DMABUF_UPDATE of `rect` on `scanout`: the command that showed it and the
    /// resource it showed.
    pub fn update(&mut self, scanout: u32, rect: [u32; 4]) -> Option<(RecordId, u32)> {
        let s = scanout as usize;
        if s >= SCANOUTS {
            return None;
        }
        let bit = 1u32 << s;
        let mut shown = self.shown;
        // First choice: a flush of the resource the scanout shows by then. Then a scanout
        // change already announced (a backend that sends the picture with it). Last, any
        // flush that fits, whatever the scanout showed (the proxy's view of the scanouts
        // may have lost a command): the scanout shows its resource from then on.
        let (mut flush, mut set, mut any) = (None, None, None);
        for (i, p) in self.pending[0].iter().enumerate() {
            match p.cause {
                Cause::Flush {
                    resource,
                    rect: fr,
                    size,
                } if p.served & bit == 0 && update_fits(rect, fr, size) => {
                    if shown[s] == resource {
                        flush = Some(i);
                        break;
                    }
                    any = any.or(Some(i));
                }
                Cause::Scanout {
                    scanout: ps,
                    resource,
                    ..
                } if ps == scanout
                    && resource != 0
                    && p.served & SCANOUT_SERVED != 0
                    && p.served & UPDATE_SERVED == 0 =>
                {
                    set = set.or(Some(i));
                }
                _ => {}
            }
            apply(&mut shown, &p.cause);
        }
        let (i, served) = match (flush, set, any) {
            (Some(i), _, _) | (None, None, Some(i)) => (i, bit),
            (None, Some(i), _) => (i, UPDATE_SERVED),
            (None, None, None) => return None,
        };
        self.pending[0][i].served |= served;
        self.retire_before(0, i);
        let p = self.pending[0][0];
        if let Some(sh) = self.shown.get_mut(s)
            && matches!(p.cause, Cause::Flush { .. })
        {
            *sh = p.cause.resource();
        }
        Some((p.record, p.cause.resource()))
    }

    /// A cursor message for `scanout` at `pos`: the cursor command that sent it and the
    /// cursor's resource.
    pub fn cursor(
        &mut self,
        message: CursorMessage,
        scanout: u32,
        pos: [u32; 2],
    ) -> Option<(RecordId, u32)> {
        let i = self.pending[1].iter().position(|p| {
            let Cause::Cursor {
                update,
                scanout: ps,
                pos: pp,
                resource,
            } = p.cause
            else {
                return false;
            };
            ps == scanout
                && p.served & message.bit() == 0
                && match message {
                    CursorMessage::Pos => pp == pos && resource != 0,
                    CursorMessage::Hide => resource == 0,
                    CursorMessage::Update => update && pp == pos,
                }
        })?;
        self.pending[1][i].served |= message.bit();
        self.retire_before(1, i);
        let p = self.pending[1][0];
        Some((p.record, p.cause.resource()))
    }

    /// Commands pending on `queue` (tests, and the proxy's fuzz target's bound check).
    pub fn pending(&self, queue: u16) -> usize {
        self.pending
            .get(usize::from(queue))
            .map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flush(resource: u32, rect: [u32; 4]) -> Cause {
        Cause::Flush {
            resource,
            rect,
            size: [64, 64],
        }
    }

    fn set(scanout: u32, resource: u32) -> Cause {
        Cause::Scanout {
            scanout,
            resource,
            size: if resource == 0 { [0, 0] } else { [64, 64] },
        }
    }

    /// QEMU's backend: a batch of scanout changes and flushes, answered in order.
    #[test]
    fn a_queued_batch_gives_each_message_to_the_command_that_sent_it() {
        let mut c = DisplayCauses::default();
        c.push(0, 10, set(0, 3));
        c.push(0, 11, flush(3, [0, 0, 64, 64]));
        c.push(0, 12, flush(3, [0, 0, 8, 8]));
        c.push(0, 13, set(0, 4));
        c.push(0, 14, flush(4, [0, 0, 64, 64]));
        c.push(0, 15, flush(3, [0, 0, 64, 64])); // not shown any more: no update
        c.push(0, 16, flush(4, [8, 8, 8, 8]));
        assert_eq!(c.scanout(0, [64, 64]), Some((10, 3)));
        assert_eq!(c.update(0, [0, 0, 64, 64]), Some((11, 3)));
        assert_eq!(c.update(0, [0, 0, 8, 8]), Some((12, 3)));
        assert_eq!(c.scanout(0, [64, 64]), Some((13, 4)));
        assert_eq!(c.update(0, [0, 0, 64, 64]), Some((14, 4)));
        assert_eq!(c.update(0, [8, 8, 8, 8]), Some((16, 4)));
        assert_eq!(c.pending(0), 1);
        // Nothing left that explains another update.
        assert_eq!(c.update(0, [8, 8, 8, 8]), None);
    }

    #[test]
    fn a_resource_on_two_scanouts_gives_one_update_per_scanout_per_flush() {
        let mut c = DisplayCauses::default();
        c.push(0, 1, set(0, 3));
        c.push(0, 2, set(1, 3));
        c.push(0, 3, flush(3, [0, 0, 64, 64]));
        c.push(0, 4, flush(3, [0, 0, 64, 64]));
        assert_eq!(c.scanout(0, [64, 64]), Some((1, 3)));
        assert_eq!(c.scanout(1, [64, 64]), Some((2, 3)));
        assert_eq!(c.update(0, [0, 0, 64, 64]), Some((3, 3)));
        assert_eq!(c.update(1, [0, 0, 64, 64]), Some((3, 3)));
        assert_eq!(c.update(0, [0, 0, 64, 64]), Some((4, 3)));
        assert_eq!(c.update(1, [0, 0, 64, 64]), Some((4, 3)));
    }

    #[test]
    fn a_disable_of_a_disabled_scanout_sends_nothing_and_does_not_take_the_next_scanout() {
        let mut c = DisplayCauses::default();
        c.push(0, 1, set(0, 0));
        c.push(0, 2, set(0, 3));
        c.push(0, 3, flush(3, [0, 0, 64, 64]));
        c.push(0, 4, Cause::Unref { resource: 3 });
        assert_eq!(c.scanout(0, [64, 64]), Some((2, 3)));
        assert_eq!(c.update(0, [0, 0, 64, 64]), Some((3, 3)));
        // QEMU's backend disables the scanouts of a resource it frees.
        assert_eq!(c.scanout(0, [0, 0]), Some((4, 0)));
    }

    /// vhost-device-gpu's gfxstream mode: the whole resource after SET_SCANOUT and on every
    /// flush, whatever its rectangle.
    #[test]
    fn a_backend_that_sends_the_picture_with_the_scanout_and_whole_resources() {
        let mut c = DisplayCauses::default();
        c.push(0, 1, set(0, 3));
        assert_eq!(c.scanout(0, [64, 64]), Some((1, 3)));
        assert_eq!(c.update(0, [0, 0, 64, 64]), Some((1, 3)));
        c.push(0, 2, flush(3, [4, 4, 8, 8]));
        assert_eq!(c.update(0, [0, 0, 64, 64]), Some((2, 3)));
        // An update that neither fits a flush nor follows a scanout change.
        assert_eq!(c.update(0, [0, 0, 32, 32]), None);
    }

    #[test]
    fn a_flush_the_view_of_the_scanouts_missed_still_takes_its_update() {
        let mut c = DisplayCauses::default();
        // The SET_SCANOUT was taken before a ring restart cleared the queue.
        c.push(0, 5, flush(7, [0, 0, 16, 16]));
        c.push(0, 6, flush(7, [0, 0, 16, 16]));
        assert_eq!(c.update(0, [0, 0, 16, 16]), Some((5, 7)));
        // Learnt: the scanout shows 7.
        assert_eq!(c.update(0, [0, 0, 16, 16]), Some((6, 7)));
    }

    #[test]
    fn cursor_messages_go_to_the_cursor_command_at_their_position() {
        let mut c = DisplayCauses::default();
        let cur = |update, x, resource| Cause::Cursor {
            update,
            scanout: 0,
            pos: [x, 5],
            resource,
        };
        c.push(1, 20, cur(true, 1, 9));
        c.push(1, 21, cur(false, 2, 9));
        c.push(1, 22, cur(false, 3, 9));
        c.push(1, 23, cur(false, 3, 0));
        assert_eq!(c.cursor(CursorMessage::Update, 0, [1, 5]), Some((20, 9)));
        assert_eq!(c.cursor(CursorMessage::Pos, 0, [2, 5]), Some((21, 9)));
        assert_eq!(c.cursor(CursorMessage::Pos, 0, [3, 5]), Some((22, 9)));
        assert_eq!(c.cursor(CursorMessage::Hide, 0, [3, 5]), Some((23, 0)));
        assert_eq!(c.cursor(CursorMessage::Pos, 0, [3, 5]), None);
        assert_eq!(c.pending(1), 1);
    }

    #[test]
    fn the_queues_stay_bounded_and_out_of_range_scanouts_match_nothing() {
        let mut c = DisplayCauses::default();
        for i in 0..(MAX_PENDING as u64 + 10) {
            c.push(0, i, flush(3, [0, 0, 64, 64]));
        }
        assert_eq!(c.pending(0), MAX_PENDING);
        assert_eq!(c.update(16, [0, 0, 64, 64]), None);
        assert_eq!(c.scanout(u32::MAX, [1, 1]), None);
        assert_eq!(c.update(0, [u32::MAX, u32::MAX, u32::MAX, u32::MAX]), None);
        c.clear(0);
        assert_eq!(c.pending(0), 0);
    }
}
