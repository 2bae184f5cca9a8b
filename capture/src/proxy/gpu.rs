//! The vhost-user-gpu display socket in proxy mode: QEMU's end stays with the proxy, the
//! backend gets one end of a fresh socket pair, and two threads relay the messages (with any
//! dmabuf descriptors) both ways, recording each as a GpuSocket record; SCANOUT and UPDATE also
//! keep a per-scanout picture that becomes a Frame record after each update, and the cursor
//! messages become Cursor records — the same records built-in mode writes.

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use vgt_format::record::{Cursor, CursorAction, Direction, Frame, GpuSocketMessage, RecordBody};

use super::Shared;
use vgt_device::DisplayEvent;
use vgt_device::display::{FRAME_FORMAT, Framebuffers};

use crate::display::gpu_req;
use crate::relay::{self, RawMessage};

/// Largest display message the relay accepts: a 16384x16384 UPDATE plus its header.
pub const MAX_GPU_PAYLOAD: u32 = 16384 * 16384 * 4 + 64;

/// Display messages queued before the relay stops reading the backend (32 full frames: 256 MiB
/// at 1920x1080).
const MAX_QUEUED_MESSAGES: usize = 32;

/// DMABUF_SCANOUT.
const DMABUF_SCANOUT: u32 = 9;
/// DMABUF_SCANOUT2.
const DMABUF_SCANOUT2: u32 = 12;

fn u32_at(p: &[u8], i: usize) -> u32 {
    p.get(4 * i..4 * i + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn record_message(shared: &Shared, direction: Direction, msg: &RawMessage) {
    let (head, data) = GpuSocketMessage::split_wire_payload(direction, msg.request(), &msg.payload);
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
                    data,
                }))
        });
    if let Err(e) = r {
        eprintln!("vgt-capture proxy: recording a display message: {e}");
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
    // reply. At most MAX_QUEUED_MESSAGES wait.
    let (tx, rx) = std::sync::mpsc::sync_channel::<RawMessage>(MAX_QUEUED_MESSAGES);
    let s1 = shared.clone();
    shared.spawn("vgt-proxy-gpu-req", move || {
        while let Ok(Some(m)) = relay::read_message_limit(&backend, MAX_GPU_PAYLOAD) {
            if tx.send(m).is_err() {
                break;
            }
        }
    });
    // Forwards first, then records (GpuSocket, Frame, Cursor records), so that hashing and
    // compressing a frame overlaps the backend's next work instead of delaying QEMU.
    shared.spawn("vgt-proxy-gpu-fwd", move || {
        let mut fbs = Framebuffers::new();
        let mut forwarding = true;
        while let Ok(m) = rx.recv() {
            if forwarding && relay::write_message(&qemu, &m).is_err() {
                forwarding = false;
                let _ = qemu.shutdown(std::net::Shutdown::Write);
            }
            record_message(&s1, Direction::BackendRequest, &m);
            observe(&s1, &mut fbs, &m);
        }
        let _ = qemu.shutdown(std::net::Shutdown::Write);
    });
    let s2 = shared.clone();
    shared.spawn("vgt-proxy-gpu-rep", move || {
        while let Ok(Some(m)) = relay::read_message_limit(&q2, MAX_GPU_PAYLOAD) {
            record_message(&s2, Direction::BackendReply, &m);
            if relay::write_message(&b2, &m).is_err() {
                break;
            }
        }
        let _ = b2.shutdown(std::net::Shutdown::Write);
    });
}

/// Frame and Cursor records for a backend request.
fn observe(shared: &Shared, fbs: &mut Framebuffers, m: &RawMessage) {
    let p = &m.payload;
    let (control_cmd, cursor_cmd, resources) = {
        let st = shared.lock();
        (
            st.last_command[0].unwrap_or(u64::MAX),
            st.last_command[1].unwrap_or(u64::MAX),
            st.scanout_resource.clone(),
        )
    };
    match m.request() {
        gpu_req::SCANOUT if p.len() >= 12 => {
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
            let Some(need) = (w as usize)
                .checked_mul(h as usize)
                .and_then(|n| n.checked_mul(4))
            else {
                return;
            };
            let Some(pixels) = need.checked_add(20).and_then(|end| p.get(20..end)) else {
                return;
            };
            let Some(change) = fbs.apply_owned(DisplayEvent::Update {
                scanout_id: id,
                resource_id: resources.get(&id).copied().unwrap_or(0),
                x,
                y,
                width: w,
                height: h,
                format: FRAME_FORMAT,
                stride: w.saturating_mul(4),
                pixels: pixels.to_vec(),
            }) else {
                return;
            };
            let Some(fb) = fbs.get(change.scanout_id) else {
                return;
            };
            let r = shared.recorder.store(&fb.pixels).and_then(|pixels| {
                shared.recorder.append(RecordBody::Frame(Frame {
                    command: control_cmd,
                    scanout_id: id,
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
        gpu_req::CURSOR_POS | gpu_req::CURSOR_POS_HIDE if p.len() >= 12 => {
            let action = if m.request() == gpu_req::CURSOR_POS {
                CursorAction::Move
            } else {
                CursorAction::Hide
            };
            let _ = shared.recorder.append(RecordBody::Cursor(Cursor {
                command: cursor_cmd,
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
                command: cursor_cmd,
                action: CursorAction::Update,
                scanout_id: u32_at(p, 0),
                x: u32_at(p, 1),
                y: u32_at(p, 2),
                hot_x: u32_at(p, 3),
                hot_y: u32_at(p, 4),
                resource_id: 0,
                image,
            }));
        }
        DMABUF_SCANOUT | DMABUF_SCANOUT2 => {
            // Recorded with its metadata (and fd count) by record_message; the buffer itself is
            // not mapped.
            let _ = (DMABUF_SCANOUT, DMABUF_SCANOUT2);
        }
        _ => {}
    }
}
