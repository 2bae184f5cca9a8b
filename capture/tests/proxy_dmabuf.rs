//! `vgt-capture proxy` in front of a fake vhost-user backend that sends dmabuf scanouts over
//! the display socket: the pixels of a memfd "dmabuf" become Frame records (at the scanout and
//! after DMABUF_UPDATE), QEMU's side still gets every message with a working descriptor, an
//! unmappable descriptor (a pipe) and a tiled modifier are recorded with the reason while the
//! relay keeps going, and SessionStart holds the features the backend offers.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vgt_format::record::{LifecycleKind, RecordBody};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// What the fake backend offers for GET_FEATURES (bit 33 is one the proxy removes for QEMU).
const OFFERED: u64 = (1 << 32) | (1 << 33) | (1 << 1);
const W: u32 = 8;
const H: u32 = 4;
/// Row pitch with 8 bytes of padding.
const STRIDE: u32 = W * 4 + 8;
const XR24: u32 = u32::from_le_bytes(*b"XR24");

struct Msg {
    request: u32,
    flags: u32,
    payload: Vec<u8>,
    fds: Vec<OwnedFd>,
}

fn recv(sock: &UnixStream) -> Option<Msg> {
    let mut hdr = [0u8; 12];
    let mut fds: [RawFd; 8] = [-1; 8];
    let mut iov = [libc::iovec {
        iov_base: hdr.as_mut_ptr().cast(),
        iov_len: 12,
    }];
    // SAFETY: the iovec points at `hdr`, alive for the call.
    let (n, nfds) = unsafe { sock.recv_with_fds(&mut iov, &mut fds) }.ok()?;
    // SAFETY: descriptors just received, owned by nobody else.
    let fds: Vec<OwnedFd> = fds[..nfds]
        .iter()
        .map(|&f| unsafe { OwnedFd::from_raw_fd(f) })
        .collect();
    if n == 0 {
        return None;
    }
    let mut r = sock;
    if n < 12 {
        r.read_exact(&mut hdr[n..]).ok()?;
    }
    let size = u32::from_le_bytes(hdr[8..12].try_into().unwrap());
    let mut payload = vec![0u8; size as usize];
    r.read_exact(&mut payload).ok()?;
    Some(Msg {
        request: u32::from_le_bytes(hdr[0..4].try_into().unwrap()),
        flags: u32::from_le_bytes(hdr[4..8].try_into().unwrap()),
        payload,
        fds,
    })
}

fn send(sock: &UnixStream, request: u32, flags: u32, payload: &[u8], fds: &[RawFd]) {
    let mut all = Vec::new();
    all.extend_from_slice(&request.to_le_bytes());
    all.extend_from_slice(&flags.to_le_bytes());
    all.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    all.extend_from_slice(payload);
    let n = sock.send_with_fds(&[&all[..]], fds).unwrap();
    assert_eq!(n, all.len());
}

fn words(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn memfd(bytes: &[u8]) -> File {
    // SAFETY: memfd_create with a valid name; checked below.
    let fd = unsafe { libc::memfd_create(c"fake-dmabuf".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor.
    let f = unsafe { File::from_raw_fd(fd) };
    f.write_all_at(bytes, 0).unwrap();
    f
}

/// The visible W×H picture of a strided XRGB8888 buffer (= B8G8R8X8 bytes).
fn packed(buf: &[u8]) -> Vec<u8> {
    (0..H as usize)
        .flat_map(|r| buf[r * STRIDE as usize..r * STRIDE as usize + W as usize * 4].to_vec())
        .collect()
}

/// The fake backend's display traffic: a readable dmabuf scanout, an update of part of it,
/// a pipe "dmabuf", a tiled DMABUF_SCANOUT2, one more update, then the scanout disabled.
/// Returns the buffer contents before and after the first update.
fn backend_display(gpu: UnixStream) -> (Vec<u8>, Vec<u8>) {
    let v1: Vec<u8> = (0..STRIDE * H).map(|i| (i * 7 + 1) as u8).collect();
    let buf = memfd(&v1);
    let scanout = |id: u32| words(&[id, 0, 0, W, H, W, H, STRIDE, 0, XR24]);
    send(&gpu, 9, 0, &scanout(0), &[buf.as_raw_fd()]);
    // A round trip (GET_PROTOCOL_FEATURES): the relay handles messages in order, so once its
    // answer is back the proxy has read the scanout's picture and the buffer may change.
    send(&gpu, 1, 0, &[], &[]);
    let reply = recv(&gpu).expect("GET_PROTOCOL_FEATURES reply");
    assert_eq!(reply.request, 1);
    // Change a 2x2 rectangle at (3, 1) and tell QEMU; wait for its reply as a backend must.
    let mut v2 = v1.clone();
    for r in 1..3usize {
        for b in 0..8usize {
            v2[r * STRIDE as usize + 12 + b] = 0xa0 + (r * 8 + b) as u8;
        }
    }
    buf.write_all_at(&v2, 0).unwrap();
    send(&gpu, 10, 0, &words(&[0, 3, 1, 2, 2]), &[]);
    let reply = recv(&gpu).expect("DMABUF_UPDATE reply");
    assert_eq!((reply.request, reply.flags & 4), (10, 4));
    // Once QEMU has answered, the backend may draw the next frame at once: the recorded
    // update must still be the picture QEMU was told about.
    buf.write_all_at(&vec![0xee; v2.len()], 0).unwrap();
    // A descriptor that cannot be mapped, and a layout that cannot be read.
    let mut pipe = [0i32; 2];
    // SAFETY: pipe(2) fills the two-element array.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: fresh descriptors from pipe(2).
    let (p0, p1) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    send(&gpu, 9, 0, &scanout(1), &[p0.as_raw_fd()]);
    let mut tiled = scanout(2);
    tiled.extend_from_slice(&0x0100_0000_0000_0002u64.to_le_bytes());
    send(&gpu, 12, 0, &tiled, &[buf.as_raw_fd()]);
    // A scanout virtio-gpu cannot have (QEMU refuses it): forwarded, not kept.
    send(&gpu, 9, 0, &scanout(16), &[buf.as_raw_fd()]);
    send(&gpu, 10, 0, &words(&[1, 0, 0, W, H]), &[]);
    let reply = recv(&gpu).expect("second DMABUF_UPDATE reply: the relay stopped");
    assert_eq!(reply.request, 10);
    // Disable scanout 0 (no descriptor, zero size).
    send(&gpu, 9, 0, &words(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), &[]);
    drop(p1);
    (v1, v2)
}

#[test]
fn proxy_dmabuf_scanout_pixels_become_frames_and_bad_buffers_are_recorded_with_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bsock = dir.path().join("backend.sock");
    let listener = UnixListener::bind(&bsock).unwrap();
    // The fake backend: answers GET_FEATURES, takes the display socket and plays its part.
    let backend = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut display = None;
        let mut get_features = 0;
        while let Some(m) = recv(&conn) {
            match m.request {
                1 => {
                    get_features += 1;
                    send(&conn, 1, 1 | 4, &OFFERED.to_le_bytes(), &[]);
                }
                33 => {
                    let fd = m.fds.into_iter().next().expect("GPU_SET_SOCKET fd");
                    let gpu = UnixStream::from(fd);
                    display = Some(std::thread::spawn(move || backend_display(gpu)));
                }
                _ => {}
            }
        }
        (get_features, display.map(|d| d.join().unwrap()))
    });
    let sock = dir.path().join("front.sock");
    let out = dir.path().join("dmabuf.vgt");
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_vgt-capture"))
        .args(["proxy", "--quiet", "--socket"])
        .arg(&sock)
        .arg("--backend")
        .arg(&bsock)
        .arg("-o")
        .arg(&out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let front = loop {
        match UnixStream::connect(&sock) {
            Ok(s) => break s,
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(20), "{e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    // QEMU: GET_FEATURES, then the display socket.
    send(&front, 1, 1, &[], &[]);
    let f = recv(&front).unwrap();
    assert_eq!(f.payload, (OFFERED & !(1 << 33)).to_le_bytes());
    let (ours, theirs) = UnixStream::pair().unwrap();
    send(&front, 33, 1, &[], &[theirs.as_raw_fd()]);
    drop(theirs);
    ours.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut seen = Vec::new();
    while let Some(m) = recv(&ours) {
        match m.request {
            1 => send(&ours, 1, 1 | 4, &3u64.to_le_bytes(), &[]),
            10 => send(&ours, 10, 1 | 4, &[], &[]),
            _ => {}
        }
        let last = m.request == 9 && m.payload[12..16] == [0; 4];
        seen.push(m);
        if last {
            break;
        }
    }
    drop(front);
    let status = proxy.wait().unwrap();
    assert!(status.success(), "proxy: {status}");
    let (get_features, display) = backend.join().unwrap();
    let (v1, v2) = display.expect("the backend got a display socket");
    // The proxy asked once itself, QEMU once.
    assert_eq!(get_features, 2);

    // QEMU's side: every message, with a descriptor QEMU can use.
    let kinds: Vec<(u32, usize)> = seen.iter().map(|m| (m.request, m.fds.len())).collect();
    assert_eq!(
        kinds,
        [
            (9, 1),
            (1, 0),
            (10, 0),
            (9, 1),
            (12, 1),
            (9, 1),
            (10, 0),
            (9, 0)
        ]
    );
    let qemu_buf = File::from(seen[0].fds[0].try_clone().unwrap());
    let mut now = vec![0u8; v2.len()];
    qemu_buf.read_exact_at(&mut now, 0).unwrap();
    assert_eq!(
        now,
        vec![0xee; v2.len()],
        "QEMU's descriptor is the backend's buffer"
    );
    // SAFETY: an all-zero stat is valid; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor the test owns.
    let r = unsafe { libc::fstat(seen[3].fds[0].as_raw_fd(), &mut st) };
    assert_eq!(r, 0);
    assert_eq!(
        st.st_mode & libc::S_IFMT,
        libc::S_IFIFO,
        "QEMU got the pipe"
    );

    let (reader, records) = common::read_capture(&out);
    let bytes = |p| reader.read_payload(p).unwrap().into_owned();
    let start = records
        .iter()
        .find_map(|r| match &r.body {
            RecordBody::SessionStart(s) => Some(s.features_offered),
            _ => None,
        })
        .unwrap();
    assert_eq!(start, OFFERED, "SessionStart holds the backend's own offer");
    let frames: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Frame(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(frames.len(), 2, "one at the scanout, one after the update");
    assert_eq!(
        (frames[0].scanout_id, frames[0].width, frames[0].height),
        (0, W, H)
    );
    assert_eq!(frames[0].rect, [0, 0, W, H]);
    assert_eq!(bytes(&frames[0].pixels), packed(&v1));
    assert_eq!(frames[1].rect, [3, 1, 2, 2]);
    assert_eq!(bytes(&frames[1].pixels), packed(&v2));
    assert_ne!(packed(&v1), packed(&v2));
    let errors: Vec<&str> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Lifecycle(l) if l.kind == LifecycleKind::Error => Some(l.message.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        errors
            .iter()
            .any(|m| m.contains("dmabuf scanout 1") && m.contains("errno")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|m| m.contains("dmabuf scanout 2") && m.contains("not linear")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|m| m.contains("dmabuf scanout 16: no such scanout")),
        "{errors:?}"
    );
    // Every display message is recorded with its descriptor count.
    let gpu: Vec<(u32, u8)> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::GpuSocket(g) => Some((g.request, g.fd_count)),
            _ => None,
        })
        .collect();
    for want in [(9, 1), (12, 1), (10, 0), (9, 0)] {
        assert!(gpu.contains(&want), "{want:?} not in {gpu:?}");
    }
}
