//! The vhost-user-gpu display socket in proxy mode: QEMU's end stays with the proxy, the
//! backend gets one end of a fresh socket pair, and two threads relay the messages (with any
//! dmabuf descriptors) both ways, recording each as a GpuSocket record; SCANOUT and UPDATE also
//! keep a per-scanout picture that becomes a Frame record after each update, and the cursor
//! messages become Cursor records — the same records built-in mode writes.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use vgt_format::record::{
    Cursor, CursorAction, Direction, Frame, GpuSocketMessage, LifecycleKind, Payload, RecordBody,
};
use vgt_format::wire::gpu_socket::GpuUpdate;

use super::Shared;
use super::causes::CursorMessage;
use super::dmabuf::{DmabufScanout, ScanoutInfo};
use vgt_device::DisplayEvent;
use vgt_device::display::{FRAME_FORMAT, Framebuffers};

use crate::display::gpu_req;
use crate::relay::{self, RawMessage};

/// Largest display message the relay accepts: a 16384x16384 UPDATE plus its header.
pub const MAX_GPU_PAYLOAD: u32 = 16384 * 16384 * 4 + 64;

/// Display messages queued before the relay stops reading the backend (32 full frames: 256 MiB
/// at 1920x1080).
const MAX_QUEUED_MESSAGES: usize = 32;

/// Payload bytes queued before the relay stops reading the backend: 32 1080p frames, but not
/// 32 messages of up to [`MAX_GPU_PAYLOAD`] each (32 GiB from a backend spraying huge UPDATEs
/// while QEMU does not read). One message of any allowed size still passes an empty queue.
const MAX_QUEUED_BYTES: u64 = 256 << 20;

/// Counts the payload bytes between the display socket's reading and forwarding threads.
#[derive(Debug, Default)]
struct QueuedBytes {
    state: Mutex<(u64, bool)>,
    room: Condvar,
}

impl QueuedBytes {
    /// Waits until `len` more bytes fit (or nothing is queued), then counts them. False when
    /// the forwarding side has gone.
    fn admit(&self, len: u64) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while !st.1 && st.0 > 0 && st.0.saturating_add(len) > MAX_QUEUED_BYTES {
            st = self.room.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.0 = st.0.saturating_add(len);
        !st.1
    }

    /// `len` bytes were forwarded and recorded.
    fn release(&self, len: u64) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0 = st.0.saturating_sub(len);
        self.room.notify_all();
    }

    /// The forwarding side ends: nobody waits any more.
    fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.room.notify_all();
    }
}

/// DMABUF_SCANOUT.
const DMABUF_SCANOUT: u32 = 9;
/// DMABUF_UPDATE.
const DMABUF_UPDATE: u32 = 10;
/// DMABUF_SCANOUT2.
const DMABUF_SCANOUT2: u32 = 12;

/// Pixels read from a dmabuf for one DMABUF_UPDATE: the clipped rectangle and its packed
/// B8G8R8X8 pixels.
type DmabufPixels = ([u32; 4], Vec<u8>);

fn u32_at(p: &[u8], i: usize) -> u32 {
    p.get(4 * i..4 * i + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// Records one message as a GpuSocket record; `data` is the rest of its payload when the
/// reader split it off (an UPDATE's pixels), and its stored payload is returned (a whole-frame
/// Frame record shares it).
fn record_message(
    shared: &Shared,
    direction: Direction,
    msg: &RawMessage,
    data: &[u8],
) -> Option<Payload> {
    let (head, data) = if data.is_empty() {
        GpuSocketMessage::split_wire_payload(direction, msg.request(), &msg.payload)
    } else {
        (&msg.payload[..], Some(data))
    };
    let r = shared
        .recorder
        .store(head)
        .and_then(|payload| {
            let data = data.map(|d| shared.recorder.store(d)).transpose()?;
            Ok((payload, data))
        })
        .and_then(|(payload, data)| {
            shared
                .recorder
                .append(RecordBody::GpuSocket(GpuSocketMessage {
                    direction,
                    request: msg.request(),
                    flags: msg.flags(),
                    fd_count: u8::try_from(msg.fds.len()).unwrap_or(u8::MAX),
                    payload,
                    data: data.clone(),
                }))
                .map(|_| data)
        });
    match r {
        Ok(data) => data,
        Err(e) => {
            eprintln!("vgt-capture proxy: recording a display message: {e}");
            None
        }
    }
}

/// Where the UPDATE header ends in a backend request's payload: the reader puts the pixels
/// after it into a buffer of their own (the same split as
/// [`GpuSocketMessage::split_wire_payload`]), so that they can become the framebuffer without a
/// copy. Other messages are read whole.
fn update_header_len(request: u32, size: u32) -> usize {
    if request == gpu_req::UPDATE && size as usize > GpuUpdate::HEADER_SIZE {
        GpuUpdate::HEADER_SIZE
    } else {
        usize::MAX
    }
}

/// Pixel buffers done with (a replaced framebuffer, an update's copied pixels), handed back to
/// the reading thread for the next UPDATE: an 8 MiB buffer allocated per frame costs its page
/// faults every time.
#[derive(Debug, Default)]
struct PixelPool(Mutex<Vec<Vec<u8>>>);

impl PixelPool {
    /// Buffers kept at most.
    const KEEP: usize = 4;

    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give(&self, buf: Vec<u8>) {
        if buf.capacity() < 1 << 16 {
            return;
        }
        let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < Self::KEEP {
            pool.push(buf);
        }
    }
}

/// Longest the reply relay holds QEMU's DMABUF_UPDATE answer for the proxy's pixel copy (a
/// safety net: the copy of even a 16384x16384 rectangle takes far less).
const READ_HOLD_LIMIT: Duration = Duration::from_secs(2);

/// Counts dmabuf reads in progress; the reply relay waits until none is.
#[derive(Debug, Default)]
struct ReadGate {
    busy: Mutex<u32>,
    idle: Condvar,
}

impl ReadGate {
    fn begin(&self) {
        *self.busy.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    fn end(&self) {
        let mut b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        *b = b.saturating_sub(1);
        if *b == 0 {
            self.idle.notify_all();
        }
    }

    fn wait_idle(&self, limit: Duration) {
        let b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self
            .idle
            .wait_timeout_while(b, limit, |b| *b > 0)
            .map_err(|p| p.into_inner());
    }
}

/// Starts relaying between QEMU's display socket and the backend's.
pub fn start(shared: &Arc<Shared>, qemu: UnixStream, backend: UnixStream) {
    let (Ok(q2), Ok(b2)) = (qemu.try_clone(), backend.try_clone()) else {
        return;
    };
    shared.keep_socket(&qemu);
    shared.keep_socket(&backend);
    // Backend requests are read as soon as the backend sends them and written to QEMU by a
    // second thread: QEMU stops reading the display socket while its main loop waits for a
    // vhost-user reply, and a backend blocked on a full display socket could not send that
    // reply. At most MAX_QUEUED_MESSAGES wait, holding at most MAX_QUEUED_BYTES.
    let (tx, rx) = std::sync::mpsc::sync_channel::<(RawMessage, Vec<u8>)>(MAX_QUEUED_MESSAGES);
    let queued = Arc::new(QueuedBytes::default());
    let fwd_queued = queued.clone();
    let fwd_gate = Arc::new(ReadGate::default());
    let rep_gate = fwd_gate.clone();
    let pool = Arc::new(PixelPool::default());
    let reader_pool = pool.clone();
    let s1 = shared.clone();
    shared.spawn("vgt-proxy-gpu-req", move || {
        while let Ok(Some(m)) = relay::read_message_split(
            &backend,
            MAX_GPU_PAYLOAD,
            update_header_len,
            reader_pool.take(),
        ) {
            let len = (m.0.payload.len() + m.1.len()) as u64;
            if !queued.admit(len) || tx.send(m).is_err() {
                break;
            }
        }
    });
    // Forwards first, then records (GpuSocket, Frame, Cursor records), so that hashing and
    // compressing a frame overlaps the backend's next work instead of delaying QEMU.
    shared.spawn("vgt-proxy-gpu-fwd", move || {
        let mut fbs = Framebuffers::new();
        let mut dmabufs: HashMap<u32, DmabufScanout> = HashMap::new();
        let mut forwarding = true;
        // Whatever ends this thread lets a waiting reader go.
        struct Closing(Arc<QueuedBytes>);
        impl Drop for Closing {
            fn drop(&mut self) {
                self.0.close();
            }
        }
        let _closing = Closing(fwd_queued.clone());
        while let Ok((mut m, data)) = rx.recv() {
            let len = (m.payload.len() + data.len()) as u64;
            // The backend waits for QEMU's reply to DMABUF_UPDATE before it touches the buffer
            // again. QEMU gets the message at once (its display work overlaps the proxy's
            // copy of the damaged rectangle), and the reply relay holds QEMU's answer until
            // that copy is done, so the pixels read are the ones QEMU was told about.
            let reads = m.request() == DMABUF_UPDATE
                && m.payload.len() >= 20
                && dmabufs.contains_key(&u32_at(&m.payload, 0));
            if reads {
                fwd_gate.begin();
            }
            if forwarding && relay::write_message_parts(&qemu, &m, &data).is_err() {
                forwarding = false;
                let _ = qemu.shutdown(std::net::Shutdown::Write);
            }
            let pixels = reads
                .then(|| read_dmabuf_update(&dmabufs, &m.payload))
                .flatten();
            if reads {
                fwd_gate.end();
            }
            let stored = record_message(&s1, Direction::BackendRequest, &m, &data);
            let update = Update { data, stored };
            observe(&s1, &mut fbs, &pool, &mut dmabufs, &mut m, update, pixels);
            fwd_queued.release(len);
        }
        // Mappings and descriptors are released here (drop), or on disable/replace above.
        drop(dmabufs);
        let _ = qemu.shutdown(std::net::Shutdown::Write);
    });
    let s2 = shared.clone();
    shared.spawn("vgt-proxy-gpu-rep", move || {
        while let Ok(Some(m)) = relay::read_message_limit(&q2, MAX_GPU_PAYLOAD) {
            if m.request() == DMABUF_UPDATE {
                rep_gate.wait_idle(READ_HOLD_LIMIT);
            }
            record_message(&s2, Direction::BackendReply, &m, &[]);
            if relay::write_message(&b2, &m).is_err() {
                break;
            }
        }
        // QEMU closed its end (a stop or reset closes the display socket): the backend sees its
        // peer gone, as without the proxy (its reads end, its writes fail), not a socket that
        // still takes its messages and never answers.
        let _ = b2.shutdown(std::net::Shutdown::Both);
    });
}

/// The damaged rectangle of a DMABUF_UPDATE read from the scanout's mapped buffer.
fn read_dmabuf_update(dmabufs: &HashMap<u32, DmabufScanout>, p: &[u8]) -> Option<DmabufPixels> {
    if p.len() < 20 {
        return None;
    }
    let d = dmabufs.get(&u32_at(p, 0))?;
    d.read([u32_at(p, 1), u32_at(p, 2), u32_at(p, 3), u32_at(p, 4)])
}

/// An UPDATE's pixels as the reader split them off, and their stored payload.
struct Update {
    data: Vec<u8>,
    stored: Option<Payload>,
}

/// Applies an update to the scanout's picture and records the Frame (the same composition
/// as built-in mode and replay). `known` is the payload already stored for exactly these
/// pixels (the UPDATE's data): when the update covers the whole framebuffer, the pixels become
/// the framebuffer and the Frame shares that payload instead of hashing the picture again.
#[allow(clippy::too_many_arguments)]
fn record_frame(
    shared: &Shared,
    fbs: &mut Framebuffers,
    pool: &PixelPool,
    command: u64,
    scanout_id: u32,
    resource_id: u32,
    rect: [u32; 4],
    pixels: Vec<u8>,
    known: Option<Payload>,
) {
    let [x, y, w, h] = rect;
    // The condition under which `apply_owned_returning` makes `pixels` the framebuffer.
    let whole = (x, y) == (0, 0)
        && fbs
            .get(scanout_id)
            .is_some_and(|fb| (fb.width, fb.height) == (w, h) && fb.pixels.len() == pixels.len());
    let (change, spare) = fbs.apply_owned_returning(DisplayEvent::Update {
        scanout_id,
        resource_id,
        x,
        y,
        width: w,
        height: h,
        format: FRAME_FORMAT,
        stride: w.saturating_mul(4),
        pixels,
        // Pixels from QEMU's display socket, not from a device's memory read.
        copy_of_read: None,
    });
    if let Some(spare) = spare {
        pool.give(spare);
    }
    let Some(change) = change else {
        return;
    };
    let Some(fb) = fbs.get(change.scanout_id) else {
        return;
    };
    let stored = match known.filter(|_| whole) {
        Some(p) => Ok(p),
        None => shared.recorder.store(&fb.pixels),
    };
    let r = stored.and_then(|pixels| {
        shared.recorder.append(RecordBody::Frame(Frame {
            command,
            scanout_id,
            resource_id: fb.resource_id,
            format: FRAME_FORMAT.0,
            width: fb.width,
            height: fb.height,
            stride: fb.stride(),
            rect: change.rect,
            pixels,
        }))
    });
    if let Err(e) = r {
        eprintln!("vgt-capture proxy: recording a frame: {e}");
    }
}

/// DMABUF_SCANOUT / DMABUF_SCANOUT2: keeps the proxy's descriptor (QEMU already got its own),
/// maps the buffer when it can, and records the visible picture as a Frame; or records why the
/// pixels cannot be read. A disable (or a replacing scanout) releases the previous one.
fn observe_dmabuf_scanout(
    shared: &Shared,
    fbs: &mut Framebuffers,
    pool: &PixelPool,
    dmabufs: &mut HashMap<u32, DmabufScanout>,
    m: &mut RawMessage,
    command: u64,
    resource_id: u32,
) {
    let Some(info) = ScanoutInfo::parse(&m.payload, m.request() == DMABUF_SCANOUT2) else {
        return;
    };
    let id = info.scanout_id;
    if id as usize >= vgt_device::MAX_SCANOUTS {
        // QEMU refuses it too; keeping a descriptor and a mapping per id would let a
        // misbehaving backend hold any number of them.
        let _ = shared.recorder.lifecycle(
            LifecycleKind::Error,
            None,
            None,
            format!(
                "dmabuf scanout {id}: no such scanout (virtio-gpu has at most {}); forwarded, pixels not recorded",
                vgt_device::MAX_SCANOUTS
            ),
        );
        return;
    }
    dmabufs.remove(&id);
    let fd = m.fds.pop();
    let (Some(fd), false) = (fd, info.is_disable()) else {
        fbs.apply(&DisplayEvent::Scanout {
            scanout_id: id,
            width: 0,
            height: 0,
        });
        return;
    };
    let d = DmabufScanout::new(info, fd);
    fbs.apply(&DisplayEvent::Scanout {
        scanout_id: id,
        width: info.rect[2],
        height: info.rect[3],
    });
    if let Some(why) = d.unreadable() {
        let msg = format!(
            "dmabuf scanout {id} ({}x{} of a {}x{} buffer, stride {}, fourcc {:#010x}, modifier {}): pixels not recorded: {why}",
            info.rect[2],
            info.rect[3],
            info.fd_width,
            info.fd_height,
            info.fd_stride,
            info.fd_drm_fourcc,
            info.modifier
                .map_or_else(|| "none".to_owned(), |m| format!("{m:#x}")),
        );
        eprintln!("vgt-capture proxy: {msg}");
        let _ = shared
            .recorder
            .lifecycle(LifecycleKind::Error, None, None, msg);
    } else if let Some((rect, pixels)) = d.read([0, 0, info.rect[2], info.rect[3]]) {
        record_frame(
            shared,
            fbs,
            pool,
            command,
            id,
            resource_id,
            rect,
            pixels,
            None,
        );
    }
    dmabufs.insert(id, d);
}

/// Frame and Cursor records for a backend request.
fn observe(
    shared: &Shared,
    fbs: &mut Framebuffers,
    pool: &PixelPool,
    dmabufs: &mut HashMap<u32, DmabufScanout>,
    m: &mut RawMessage,
    update: Update,
    dmabuf_pixels: Option<DmabufPixels>,
) {
    let p = &m.payload;
    // The command that sent the message and the resource it shows (causes.rs); one the pending
    // commands do not explain names the last command taken on its queue.
    let (command, resource) = {
        let mut st = shared.lock();
        let id = u32_at(p, 0);
        let causes = &mut st.display_causes;
        let found = match m.request() {
            gpu_req::SCANOUT if p.len() >= 12 => causes.scanout(id, [u32_at(p, 1), u32_at(p, 2)]),
            gpu_req::UPDATE | DMABUF_UPDATE if p.len() >= 20 => {
                causes.update(id, [u32_at(p, 1), u32_at(p, 2), u32_at(p, 3), u32_at(p, 4)])
            }
            DMABUF_SCANOUT | DMABUF_SCANOUT2 => {
                ScanoutInfo::parse(p, m.request() == DMABUF_SCANOUT2)
                    .and_then(|i| causes.scanout(id, [i.rect[2], i.rect[3]]))
            }
            gpu_req::CURSOR_POS if p.len() >= 12 => {
                causes.cursor(CursorMessage::Pos, id, [u32_at(p, 1), u32_at(p, 2)])
            }
            gpu_req::CURSOR_POS_HIDE if p.len() >= 12 => {
                causes.cursor(CursorMessage::Hide, id, [u32_at(p, 1), u32_at(p, 2)])
            }
            gpu_req::CURSOR_UPDATE if p.len() >= 20 => {
                causes.cursor(CursorMessage::Update, id, [u32_at(p, 1), u32_at(p, 2)])
            }
            _ => None,
        };
        let cursor = matches!(
            m.request(),
            gpu_req::CURSOR_POS | gpu_req::CURSOR_POS_HIDE | gpu_req::CURSOR_UPDATE
        );
        found.unwrap_or_else(|| {
            if cursor {
                (st.last_command[1].unwrap_or(u64::MAX), st.cursor_resource)
            } else {
                let shown = st.scanout_resource.get(&id).copied().unwrap_or(0);
                (st.last_command[0].unwrap_or(u64::MAX), shown)
            }
        })
    };
    match m.request() {
        gpu_req::SCANOUT if p.len() >= 12 => {
            dmabufs.remove(&u32_at(p, 0));
            // The same composition as built-in mode (and as replay verifies against).
            fbs.apply(&DisplayEvent::Scanout {
                scanout_id: u32_at(p, 0),
                width: u32_at(p, 1),
                height: u32_at(p, 2),
            });
        }
        gpu_req::UPDATE if p.len() >= 20 => {
            let (id, x, y, w, h) = (
                u32_at(p, 0),
                u32_at(p, 1),
                u32_at(p, 2),
                u32_at(p, 3),
                u32_at(p, 4),
            );
            let Update {
                data: mut pixels,
                stored,
            } = update;
            let Some(need) = (w as usize)
                .checked_mul(h as usize)
                .and_then(|n| n.checked_mul(4))
                .filter(|&n| n <= pixels.len())
            else {
                pool.give(pixels);
                return;
            };
            // Bytes past the rectangle (none from a well-behaved backend) are in the
            // GpuSocket record; the Frame shares the payload only when there are none.
            let known = stored.filter(|_| pixels.len() == need);
            pixels.truncate(need);
            let rect = [x, y, w, h];
            record_frame(
                shared, fbs, pool, command, id, resource, rect, pixels, known,
            );
            return;
        }
        gpu_req::CURSOR_POS | gpu_req::CURSOR_POS_HIDE if p.len() >= 12 => {
            let action = if m.request() == gpu_req::CURSOR_POS {
                CursorAction::Move
            } else {
                CursorAction::Hide
            };
            let _ = shared.recorder.append(RecordBody::Cursor(Cursor {
                command,
                action,
                scanout_id: u32_at(p, 0),
                x: u32_at(p, 1),
                y: u32_at(p, 2),
                hot_x: 0,
                hot_y: 0,
                resource_id: 0,
                image: None,
            }));
        }
        gpu_req::CURSOR_UPDATE if p.len() >= 20 => {
            let image = p
                .get(20..20 + 64 * 64 * 4)
                .and_then(|i| shared.recorder.store(i).ok());
            let _ = shared.recorder.append(RecordBody::Cursor(Cursor {
                command,
                action: CursorAction::Update,
                scanout_id: u32_at(p, 0),
                x: u32_at(p, 1),
                y: u32_at(p, 2),
                hot_x: u32_at(p, 3),
                hot_y: u32_at(p, 4),
                resource_id: resource,
                image,
            }));
        }
        DMABUF_SCANOUT | DMABUF_SCANOUT2 => {
            // Its metadata (and fd count) is in the GpuSocket record already.
            observe_dmabuf_scanout(shared, fbs, pool, dmabufs, m, command, resource);
        }
        DMABUF_UPDATE => {
            if let Some((rect, pixels)) = dmabuf_pixels {
                let id = u32_at(p, 0);
                record_frame(shared, fbs, pool, command, id, resource, rect, pixels, None);
            }
        }
        _ => {}
    }
    pool.give(update.data);
}

/// The display relay's forwarding side driven by arbitrary backend messages (the
/// `proxy_display` fuzz target and its seeds in the tests): each message goes through the same
/// steps as on the `vgt-proxy-gpu-fwd` thread after its write to QEMU (the dmabuf read of a
/// DMABUF_UPDATE, the GpuSocket record, the Frame and Cursor records), into a null sink. Nothing
/// a backend sends may make the proxy panic or allocate past its limits, and every framebuffer
/// kept must be a scanout the protocol can have, holding exactly `width * height * 4` bytes.
#[cfg(any(test, fuzzing))]
pub mod fuzzing {
    use super::*;
    use crate::proxy::causes::{Cause, MAX_PENDING};
    use std::os::fd::OwnedFd;

    const REQUESTS: [u32; 8] = [
        gpu_req::SCANOUT,
        gpu_req::UPDATE,
        gpu_req::CURSOR_POS,
        gpu_req::CURSOR_POS_HIDE,
        gpu_req::CURSOR_UPDATE,
        DMABUF_SCANOUT,
        DMABUF_UPDATE,
        DMABUF_SCANOUT2,
    ];

    fn memfd(len: u64, fill: u8) -> Option<OwnedFd> {
        let file = crate::proxy::rings::memfd(c"vgt-fuzz-dmabuf", len).ok()?;
        if fill != 0 {
            use std::os::unix::fs::FileExt;
            let head = vec![fill; len.min(1 << 16) as usize];
            file.write_all_at(&head, 0).ok()?;
        }
        Some(OwnedFd::from(file))
    }

    /// Runs one input: display commands taken from the guest, each `sel: u8` of 0xF0 or more
    /// (`sel % 4`: flush, scanout change, unref, cursor; bit 2: the cursor queue), `record:
    /// u32` and its fields as `u32`s; and messages, each `sel: u8, len: u16, payload` (`sel %
    /// 9`: SCANOUT, UPDATE,
    /// CURSOR_POS, CURSOR_POS_HIDE, CURSOR_UPDATE, DMABUF_SCANOUT, DMABUF_UPDATE,
    /// DMABUF_SCANOUT2, then a raw `u32` code), then for UPDATE `w: u8, h: u8, fill: u8`
    /// (pixels appended: `w * h * 4` bytes, as the reader splits them off) and for the dmabuf
    /// scanouts `pages: u16, fill: u8` (a memfd of that many 4 KiB pages, sparse past 64 KiB).
    pub fn run(data: &[u8]) {
        let Some(shared) = crate::proxy::fuzzing::null_shared() else {
            return;
        };
        let pool = PixelPool::default();
        let mut fbs = Framebuffers::new();
        let mut dmabufs: HashMap<u32, DmabufScanout> = HashMap::new();
        let mut input = crate::fuzzing::Input::new(data);
        while !input.done() {
            let sel = input.u8();
            if sel >= 0xF0 {
                // A display command taken from the guest (`proxy::causes`).
                let record = u64::from(input.u32());
                let mut w = || input.u32();
                let cause = match sel % 4 {
                    0 => Cause::Flush {
                        resource: w(),
                        rect: [w(), w(), w(), w()],
                        size: [w(), w()],
                    },
                    1 => Cause::Scanout {
                        scanout: w() % 20,
                        resource: w() % 4,
                        size: [w(), w()],
                    },
                    2 => Cause::Unref { resource: w() % 4 },
                    _ => Cause::Cursor {
                        update: w() & 1 != 0,
                        scanout: w() % 20,
                        pos: [w(), w()],
                        resource: w() % 4,
                    },
                };
                let queue = u16::from(sel & 4 != 0);
                let mut st = shared.lock();
                st.display_causes.push(queue, record, cause);
                assert!(st.display_causes.pending(queue) <= MAX_PENDING);
                continue;
            }
            let sel = usize::from(sel % 9);
            let request = match REQUESTS.get(sel) {
                Some(&r) => r,
                None => input.u32(),
            };
            let len = usize::from(input.u16()) % 4096;
            // Missing bytes read as 0: the payload is `len` bytes however short the input.
            let mut payload = input.bytes(len).to_vec();
            payload.resize(len, 0);
            let mut fds = Vec::new();
            let mut pixels = Vec::new();
            if request == gpu_req::UPDATE {
                let (w, h, fill) = (input.u8(), input.u8(), input.u8());
                pixels = vec![fill; usize::from(w) * usize::from(h) * 4];
            }
            if request == DMABUF_SCANOUT || request == DMABUF_SCANOUT2 {
                let pages = u64::from(input.u16());
                if let Some(fd) = memfd(pages * 4096, input.u8()) {
                    fds.push(fd);
                }
            }
            let mut m = RawMessage {
                header: crate::fuzzing::header(request, 0, payload.len() + pixels.len()),
                payload,
                fds,
            };
            // The fwd thread's steps after its write to QEMU.
            let reads = m.request() == DMABUF_UPDATE
                && m.payload.len() >= 20
                && dmabufs.contains_key(&u32_at(&m.payload, 0));
            let dmabuf_pixels = reads
                .then(|| read_dmabuf_update(&dmabufs, &m.payload))
                .flatten();
            let stored = record_message(&shared, Direction::BackendRequest, &m, &pixels);
            let update = Update {
                data: pixels,
                stored,
            };
            observe(
                &shared,
                &mut fbs,
                &pool,
                &mut dmabufs,
                &mut m,
                update,
                dmabuf_pixels,
            );
            for (id, fb) in fbs.iter() {
                assert!(
                    (id as usize) < vgt_device::MAX_SCANOUTS,
                    "framebuffer for scanout {id}"
                );
                assert_eq!(
                    fb.pixels.len() as u64,
                    u64::from(fb.width) * u64::from(fb.height) * 4,
                    "scanout {id}"
                );
            }
            assert!(
                dmabufs
                    .keys()
                    .all(|&id| (id as usize) < vgt_device::MAX_SCANOUTS)
            );
        }
    }

    /// What a backend sends, as [`run`] inputs: display commands and the messages they bring; a SCANOUT and UPDATEs (a whole frame, a
    /// rectangle past the edge), the cursor messages, a dmabuf scanout over a memfd and its
    /// DMABUF_UPDATE, a huge sparse one.
    pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        fn msg(sel: u8, words: &[u32], tail: &[u8]) -> Vec<u8> {
            let payload: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let mut v = vec![sel];
            v.extend_from_slice(&(payload.len() as u16).to_le_bytes());
            v.extend(payload);
            v.extend_from_slice(tail);
            v
        }
        const XR24: u32 = u32::from_le_bytes(*b"XR24");
        let display = [
            msg(0, &[0, 16, 8], &[]),
            msg(1, &[0, 0, 0, 16, 8], &[16, 8, 0x40]),
            msg(1, &[0, 12, 6, 8, 8], &[8, 8, 0x80]),
            msg(2, &[0, 5, 6], &[]),
            msg(4, &[0, 1, 2, 3, 4], &[]),
            msg(3, &[0, 0, 0], &[]),
        ]
        .concat();
        let dmabuf = [
            msg(5, &[1, 0, 0, 16, 8, 16, 8, 64, 0, XR24], &[1, 0, 0x33]),
            msg(6, &[1, 2, 2, 4, 4], &[]),
            msg(
                7,
                &[2, 0, 0, 16, 8, 16, 8, 64, 0, XR24, 0, 0],
                &[1, 0, 0x33],
            ),
            msg(5, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[0, 0, 0]),
        ]
        .concat();
        let huge = [msg(
            5,
            &[0, 0, 0, 65535, 65535, 65535, 65535, 262_140, 0, XR24],
            &[0xff, 0xff, 0],
        )]
        .concat();
        // A guest's SET_SCANOUT and flush (records 10, 11) and a cursor move (12), then the
        // backend's messages for them.
        fn cause(sel: u8, record: u32, words: &[u32]) -> Vec<u8> {
            let mut v = vec![sel];
            v.extend(record.to_le_bytes());
            v.extend(words.iter().flat_map(|w| w.to_le_bytes()));
            v
        }
        let causes = [
            cause(0xF1, 10, &[0, 3, 16, 8]),
            cause(0xF0, 11, &[3, 0, 0, 16, 8, 16, 8]),
            cause(0xF7, 12, &[0, 0, 5, 6, 1]),
            msg(0, &[0, 16, 8], &[]),
            msg(1, &[0, 0, 0, 16, 8], &[16, 8, 0x40]),
            msg(2, &[0, 5, 6], &[]),
        ]
        .concat();
        vec![
            ("causes", causes),
            ("display", display),
            ("dmabuf", dmabuf),
            ("huge_dmabuf", huge),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn queued_bytes_hold_the_reader_past_the_limit_and_let_it_go_on_release_or_close() {
        let q = Arc::new(QueuedBytes::default());
        // One message larger than the limit passes an empty queue.
        assert!(q.admit(u64::from(MAX_GPU_PAYLOAD)));
        let (tx, rx) = mpsc::channel();
        let reader = {
            let q = q.clone();
            std::thread::spawn(move || {
                let admitted = q.admit(1);
                tx.send(admitted).unwrap_or_else(|e| panic!("{e}"));
                // Then the forwarding side goes while it waits for room.
                let admitted = q.admit(MAX_QUEUED_BYTES);
                tx.send(admitted).unwrap_or_else(|e| panic!("{e}"));
            })
        };
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "the second message waits while 1 GiB is queued"
        );
        q.release(u64::from(MAX_GPU_PAYLOAD));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(true));
        // 1 byte queued: MAX_QUEUED_BYTES more do not fit; closing releases the reader.
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        q.close();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(false));
        reader.join().unwrap_or_else(|_| panic!("reader panicked"));
    }

    #[test]
    fn display_seeds_run_with_every_cut() {
        for (name, input) in fuzzing::seeds() {
            for cut in 0..=input.len() {
                eprintln!("{name} cut at {cut}");
                fuzzing::run(&input[..cut]);
            }
        }
    }

    #[test]
    fn display_seeds_on_disk_are_the_generated_ones() {
        // fuzz/seeds/proxy_display holds fuzzing::seeds() for the proxy_display fuzz target.
        crate::fuzzing::check_seeds_on_disk("proxy_display", &fuzzing::seeds());
    }
}
