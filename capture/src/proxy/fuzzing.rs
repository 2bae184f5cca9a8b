//! The proxy's vhost-user message rewriting driven by arbitrary bytes: front-end requests
//! (memory tables, memory slots, ring setup, kick and call descriptors) through
//! `rewrite_request`, backend replies through `rewrite_reply`, with the guest writing its
//! memory and the queue worker's `step` moving entries in between. The `proxy_messages` fuzz
//! target and its seeds in the tests. Nothing a front-end or a backend sends may make the
//! proxy panic, and every forwarded message must say what the proxy changed and nothing else:
//!
//! - the header's size field is the payload's length, for the message and for the proxy's own
//!   ADD_MEM_REG;
//! - payload bytes change only where the proxy rewrites them (the region count and the
//!   appended shadow region of SET_MEM_TABLE, the ring addresses of SET_VRING_ADDR, the
//!   no-fd bit of SET_VRING_KICK/CALL, the feature and slot replies);
//! - the shadow region the backend is told about is where the proxy mapped its shadow rings
//!   and overlaps no region of the guest's, in either address space;
//! - shadow ring addresses handed to the backend lie inside the shadow region.
//!
//! SET_BACKEND_REQ_FD and GPU_SET_SOCKET are not driven here (each starts a relay thread over
//! the socket it is given; the proxy tests cover them).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::rings::{MAX_QUEUES, ProxyState, Region, SHADOW_SIZE};
use super::{STRIPPED_FEATURES, Shared, req, rewrite_reply, rewrite_request, step};
use crate::fuzzing::{Input, dup, header, mem_table, memfd, vring_addr, words};
use crate::recorder::Recorder;
use crate::relay::{self, RawMessage};
use crate::sink::NullSink;
use vgt_format::record::Direction;

/// Most memfds one input creates (each is guest memory the input can write).
const MAX_FILES: usize = 16;
/// Largest memfd an input creates, in 4 KiB pages.
const MAX_PAGES: u64 = 64;

/// Requests an input names by a small index (anything past the table is taken as a raw code).
const REQUESTS: [u32; 13] = [
    req::SET_FEATURES,
    req::SET_MEM_TABLE,
    req::SET_VRING_NUM,
    req::SET_VRING_ADDR,
    req::SET_VRING_BASE,
    req::GET_VRING_BASE,
    req::SET_VRING_KICK,
    req::SET_VRING_CALL,
    req::ADD_MEM_REG,
    req::REM_MEM_REG,
    req::GET_FEATURES,
    req::GET_PROTOCOL_FEATURES,
    req::GET_MAX_MEM_SLOTS,
];

fn code(sel: u8, raw: &mut Input<'_>) -> u32 {
    match REQUESTS.get(usize::from(sel)) {
        Some(&c) => c,
        None => raw.u32(),
    }
}

fn u64_at(p: &[u8], at: usize) -> u64 {
    super::payload_u64(p, at)
}

fn overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

/// The shadow region the proxy announces must be its own mapping, clear of every guest
/// region, with no address overflowing.
fn check_shadow(st: &ProxyState, shadow: &Region, regions: &[Region], what: &str) {
    assert_eq!(
        *shadow,
        st.shadow_region(),
        "{what}: not the proxy's shadow"
    );
    assert!(
        st.shadow_mapped_at(shadow.gpa),
        "{what}: shadow announced at {:#x}, mapped elsewhere",
        shadow.gpa
    );
    assert!(
        shadow.gpa.checked_add(SHADOW_SIZE).is_some()
            && shadow.uaddr.checked_add(SHADOW_SIZE).is_some(),
        "{what}: shadow region {shadow:x?} wraps"
    );
    for r in regions {
        assert!(
            !overlap((r.gpa, r.size), (shadow.gpa, SHADOW_SIZE))
                && !overlap((r.uaddr, r.size), (shadow.uaddr, SHADOW_SIZE)),
            "{what}: shadow {shadow:x?} overlaps guest region {r:x?}"
        );
    }
}

/// What a front-end request may look like after the proxy rewrote it.
fn check_request(st: &ProxyState, sent: &RawMessage, orig: &[u8], fds_before: usize) {
    let request = sent.request();
    let p = &sent.payload;
    match request {
        req::SET_MEM_TABLE if sent.fds.len() == fds_before + 1 => {
            // Rewritten: QEMU's regions, then the shadow region.
            let n = super::payload_u32(orig, 0) as usize;
            assert_eq!(p.len(), 8 + 32 * (n + 1));
            assert_eq!(super::payload_u32(p, 0) as usize, n + 1);
            assert_eq!(p[4..8 + 32 * n], orig[4..8 + 32 * n]);
            assert_eq!(sent.fds.len(), n + 1);
            let region = |i: usize| {
                let o = 8 + 32 * i;
                Region {
                    gpa: u64_at(p, o),
                    size: u64_at(p, o + 8),
                    uaddr: u64_at(p, o + 16),
                    mmap_offset: u64_at(p, o + 24),
                }
            };
            let guest: Vec<Region> = (0..n).map(region).collect();
            check_shadow(st, &region(n), &guest, "SET_MEM_TABLE");
        }
        req::SET_VRING_ADDR if p != orig => {
            assert_eq!(p.len(), orig.len());
            assert_eq!(p[..8], orig[..8]);
            assert_eq!(p[32..], orig[32..]);
            let shadow = st.shadow_region();
            for at in [8, 16, 24] {
                let a = u64_at(p, at);
                assert!(
                    a >= shadow.uaddr && a - shadow.uaddr < SHADOW_SIZE,
                    "SET_VRING_ADDR: ring at {a:#x} outside the shadow {shadow:x?}"
                );
            }
        }
        req::SET_VRING_KICK | req::SET_VRING_CALL
            if usize::try_from(u64_at(orig, 0) & 0xff).is_ok_and(|q| q < MAX_QUEUES) =>
        {
            // The backend gets the proxy's eventfd, never the no-fd bit.
            assert_eq!(
                sent.fds.len(),
                1,
                "request {request}: not the proxy's eventfd"
            );
            let mut expect = orig.to_vec();
            if expect.len() >= 8 {
                expect[1] &= !1;
            }
            assert_eq!(p[..], expect[..], "request {request}: payload");
        }
        _ => assert_eq!(p[..], orig[..], "request {request}: payload changed"),
    }
}

/// What a backend reply may look like after the proxy rewrote it.
fn check_reply(sent: &RawMessage, orig: &[u8]) {
    let p = &sent.payload;
    let v = u64_at(orig, 0);
    let expect = match sent.request() {
        req::GET_FEATURES if orig.len() == 8 => Some(v & !STRIPPED_FEATURES),
        req::GET_PROTOCOL_FEATURES if orig.len() == 8 => Some(v & !super::stripped_protocol_mask()),
        req::GET_MAX_MEM_SLOTS if orig.len() == 8 => Some(v.saturating_sub(1)),
        _ => None,
    };
    match expect {
        Some(e) => assert_eq!(p[..], e.to_le_bytes()),
        None => assert_eq!(p[..], orig[..], "reply {}: payload changed", sent.request()),
    }
}

fn sized(m: &RawMessage) -> bool {
    u32::from_le_bytes([m.header[8], m.header[9], m.header[10], m.header[11]]) as usize
        == m.payload.len()
}

/// A proxy connection's shared state over a null sink, with no threads, sockets or backend
/// (the harnesses drive its parts directly).
pub fn null_shared() -> Option<Shared> {
    let recorder = Arc::new(Recorder::new(Box::new(NullSink::default())));
    let (Ok(state), Ok(worker_wake), Ok(main_wake)) = (
        ProxyState::new(recorder.clone()),
        EventFd::new(EFD_NONBLOCK),
        EventFd::new(EFD_NONBLOCK),
    ) else {
        return None;
    };
    Some(Shared {
        recorder,
        state: Mutex::new(state),
        front_closed: AtomicBool::new(false),
        backend_crashed: Mutex::new(None),
        stopping: AtomicBool::new(false),
        worker_wake,
        main_wake,
        child: Mutex::new(None),
        output: None,
        threads: Mutex::new(Vec::new()),
        sockets: Mutex::new(Vec::new()),
        shadow_mapped: AtomicBool::new(false),
        restarts: crate::relay::RingRestarts::default(),
    })
}

/// Runs one input: a sequence of operations, each an opcode byte and its arguments (missing
/// bytes read as 0).
/// - 0 `sel: u8 [code: u32 when sel >= 13], flags: u8, len: u8, payload, nfds: u8, fd: u8 *`:
///   a front-end request (the codes: SET_FEATURES, SET_MEM_TABLE, SET_VRING_NUM,
///   SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE, SET_VRING_KICK, SET_VRING_CALL,
///   ADD_MEM_REG, REM_MEM_REG, then the three reply codes). `nfds % 5` descriptors, each a
///   fresh memfd of `fd % 65` pages (guest memory the input can write) or, for `fd >= 192`, an
///   eventfd. The proxy's own ADD_MEM_REG, when it sends one, is checked too.
/// - 1 `sel: u8 [code], len: u8, payload`: a backend reply.
/// - 2 `file: u8, offset: u32, len: u8, bytes`: the guest writes one of the memfds.
/// - 3 `q: u8`: the queue worker's step on queue `q % 9` (shadow used → guest used, guest
///   avail → shadow avail).
/// - 4 `q: u8, at: u16, len: u8, bytes`: the backend writes queue `q % 8`'s shadow rings.
pub fn run(data: &[u8]) -> Outcome {
    let mut out = Outcome::default();
    let Some(shared) = null_shared().map(Arc::new) else {
        return out;
    };
    let mut files: Vec<File> = Vec::new();
    let mut input = Input::new(data);
    while !input.done() {
        match input.u8() % 5 {
            0 => {
                let sel = input.u8();
                let request = code(sel, &mut input);
                if request == req::GPU_SET_SOCKET || request == req::SET_BACKEND_REQ_FD {
                    continue;
                }
                let flags = u32::from(input.u8());
                let len = usize::from(input.u8());
                let payload = input.bytes(len).to_vec();
                let mut fds = Vec::new();
                for _ in 0..input.u8() % 5 {
                    let kind = input.u8();
                    let fd = if kind >= 192 {
                        EventFd::new(EFD_NONBLOCK).ok().map(|e| dup(&e))
                    } else {
                        memfd(u64::from(kind) % (MAX_PAGES + 1)).map(|f| {
                            let dup = f.try_clone().ok().map(OwnedFd::from);
                            if files.len() < MAX_FILES {
                                files.push(f);
                            }
                            dup
                        })
                    };
                    if let Some(Some(fd)) = fd {
                        fds.push(fd);
                    }
                }
                let mut msg = RawMessage {
                    header: header(request, flags, payload.len()),
                    payload: payload.clone(),
                    fds,
                };
                let fds_before = msg.fds.len();
                let raw_before: Vec<i32> = msg.fds.iter().map(AsRawFd::as_raw_fd).collect();
                relay::record(&shared.recorder, Direction::FrontToBack, &msg);
                relay::lifecycle_of(&shared.recorder, &msg);
                let mut before = None;
                rewrite_request(&shared, &mut msg, &mut before);
                let raw_after: Vec<i32> = msg.fds.iter().map(AsRawFd::as_raw_fd).collect();
                if msg.payload != payload || raw_after != raw_before || before.is_some() {
                    out.rewritten += 1;
                }
                assert!(sized(&msg), "request {request}: size field is stale");
                let st = shared.lock();
                if let Some(own) = before {
                    assert!(sized(&own), "the proxy's ADD_MEM_REG: size field is stale");
                    assert_eq!(own.request(), req::ADD_MEM_REG);
                    assert_eq!(own.fds.len(), 1);
                    let shadow = super::memslots::parse_region(&own.payload)
                        .unwrap_or_else(|| panic!("the proxy's ADD_MEM_REG does not parse"));
                    check_shadow(&st, &shadow, &st.regions, "the proxy's ADD_MEM_REG");
                }
                if shared.shadow_mapped.load(Ordering::SeqCst) {
                    let shadow = st.shadow_region();
                    check_shadow(&st, &shadow, &st.regions, "shadow_mapped");
                }
                check_request(&st, &msg, &payload, fds_before);
            }
            1 => {
                let sel = input.u8();
                let request = code(sel, &mut input);
                let len = usize::from(input.u8());
                let payload = input.bytes(len).to_vec();
                let mut msg = RawMessage {
                    header: header(request, 4, payload.len()),
                    payload: payload.clone(),
                    fds: Vec::new(),
                };
                rewrite_reply(&shared, &mut msg);
                assert!(sized(&msg), "reply {request}: size field is stale");
                check_reply(&msg, &payload);
            }
            2 => {
                let file = usize::from(input.u8());
                let offset = u64::from(input.u32()) % (MAX_PAGES * 4096);
                let len = usize::from(input.u8());
                let bytes = input.bytes(len).to_vec();
                if !files.is_empty() {
                    let _ = files[file % files.len()].write_all_at(&bytes, offset);
                }
            }
            3 => {
                let q = usize::from(input.u8()) % (MAX_QUEUES + 1);
                let mut st = shared.lock();
                if step(&mut st, q) {
                    out.moved += 1;
                }
            }
            _ => {
                let q = usize::from(input.u8()) % MAX_QUEUES;
                let at = u64::from(input.u16());
                let len = usize::from(input.u8());
                let bytes = input.bytes(len).to_vec();
                shared.lock().write_shadow(q, at, &bytes);
            }
        }
    }
    out.interposed = (0..MAX_QUEUES)
        .filter(|&q| shared.lock().interposed(q))
        .count();
    out
}

/// What one [`run`] did (for the tests that check the seeds reach what they are for).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Front-end requests the proxy changed (payload or descriptors) or sent a message before.
    pub rewritten: usize,
    /// Worker steps that moved entries.
    pub moved: usize,
    /// Queues interposed at the end.
    pub interposed: usize,
}

/// A QEMU-like session as [`run`] inputs: a memory table, two queues set up and a command
/// through; memory slots added and removed; a memory table whose regions sit where the shadow
/// rings were (the proxy moves them); rings at the top of guest-physical space.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    const UA: u64 = 0x7f00_0000_0000;
    fn request(sel: u8, payload: &[u8], fds: &[u8]) -> Vec<u8> {
        let mut v = vec![0, sel, 1, u8::try_from(payload.len()).unwrap_or(u8::MAX)];
        v.extend_from_slice(payload);
        v.push(u8::try_from(fds.len()).unwrap_or(0));
        v.extend_from_slice(fds);
        v
    }
    fn reply(sel: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![1, sel, u8::try_from(payload.len()).unwrap_or(u8::MAX)];
        v.extend_from_slice(payload);
        v
    }
    fn q_u32(q: u32, v: u32) -> Vec<u8> {
        [q.to_le_bytes(), v.to_le_bytes()].concat()
    }
    fn write(file: u8, offset: u32, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![2, file];
        v.extend_from_slice(&offset.to_le_bytes());
        v.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
        v.extend_from_slice(bytes);
        v
    }
    let features = reply(10, &words(&[(1 << 29) | (1 << 32) | (1 << 33) | (1 << 34)]));
    let protocol = reply(11, &words(&[0x3f_ffff]));
    let acked = request(0, &words(&[(1 << 29) | (1 << 32)]), &[]);
    // 256 KiB of RAM at guest-physical 0: rings at 0x1000 (desc), 0x2000 (avail), 0x3000 (used)
    // for queue 0 and 0x11000.. for queue 1.
    let mem = request(1, &mem_table(&[[0, 0x40000, UA, 0]]), &[64]);
    let ring = |q: u32, base: u64| {
        [
            request(2, &q_u32(q, 16), &[]),
            request(4, &q_u32(q, 0), &[]),
            request(3, &vring_addr(q, UA + base), &[]),
            request(6, &words(&[u64::from(q)]), &[200]),
            request(7, &words(&[u64::from(q)]), &[200]),
        ]
        .concat()
    };
    // One descriptor (a 24-byte GET_DISPLAY_INFO request at 0x8000, then a writable reply
    // buffer) published in queue 0's available ring.
    let mut desc = words(&[0x8000]);
    desc.extend_from_slice(&24u32.to_le_bytes());
    desc.extend_from_slice(&1u16.to_le_bytes());
    desc.extend_from_slice(&1u16.to_le_bytes());
    desc.extend(words(&[0x9000]));
    desc.extend_from_slice(&408u32.to_le_bytes());
    desc.extend_from_slice(&2u16.to_le_bytes());
    desc.extend_from_slice(&0u16.to_le_bytes());
    let chain = [
        write(0, 0x1000, &desc),
        write(0, 0x8000, &[0x00, 0x01, 0, 0]),
        write(0, 0x2000, &[0, 0, 1, 0, 0, 0]),
        vec![3, 0],
        // The backend completes it: used entry {id 0, len 408}, used index 1.
        vec![4, 0, 0x04, 0x50, 8, 0, 0, 0, 0, 0x98, 0x01, 0, 0],
        vec![4, 0, 0x02, 0x50, 2, 1, 0],
        vec![3, 0],
    ]
    .concat();
    let session = [
        features.clone(),
        protocol.clone(),
        reply(12, &words(&[32])),
        acked.clone(),
        mem.clone(),
        ring(0, 0),
        ring(1, 0x10000),
        chain,
        request(5, &q_u32(0, 0), &[]),
        reply(5, &q_u32(0, 1)),
    ]
    .concat();
    let slots = [
        features,
        protocol,
        acked.clone(),
        request(
            8,
            &[vec![0; 8], words(&[0, 0x10000, UA, 0])].concat(),
            &[16],
        ),
        request(
            8,
            &[vec![0; 8], words(&[0x10_0000, 0x10000, UA + 0x10_0000, 0])].concat(),
            &[16],
        ),
        ring(0, 0),
        request(9, &[vec![0; 8], words(&[0, 0x10000, UA, 0])].concat(), &[]),
        vec![3, 0],
    ]
    .concat();
    // Regions where the shadow rings would go, in both address spaces: the proxy moves them.
    let moved = [
        acked.clone(),
        request(
            1,
            &mem_table(&[[0, 0x40000, UA, 0], [1 << 46, 0x40000, 0x4000_0000_0000, 0]]),
            &[64, 64],
        ),
        ring(0, 0),
    ]
    .concat();
    // RAM at the very top of guest-physical space, rings at its end.
    let top = u64::MAX - 0x40000 + 1;
    let high = [
        acked,
        request(1, &mem_table(&[[top - 1, 0x40000, UA, 0]]), &[64]),
        request(2, &q_u32(0, 16), &[]),
        request(
            3,
            &[
                vec![0; 8],
                words(&[UA + 0x3fff0, UA + 0x3fff8, UA + 0x3fffc, 0]),
            ]
            .concat(),
            &[],
        ),
        request(6, &words(&[0]), &[200]),
        write(0, 0x3fffa, &[1, 0]),
        vec![3, 0],
    ]
    .concat();
    vec![
        ("session", session),
        ("mem_slots", slots),
        ("shadow_moved", moved),
        ("rings_at_the_top", high),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn seed(name: &str) -> Vec<u8> {
        seeds()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b)
            .unwrap()
    }

    #[test]
    fn message_seeds_reach_what_they_are_for() {
        // Memory table rewritten, two rings shadowed, four eventfds swapped; the command goes
        // to the shadow ring and its completion back.
        let session = run(&seed("session"));
        assert!(session.rewritten >= 7, "{session:?}");
        assert!(session.moved >= 2, "{session:?}");
        // The proxy sends its own ADD_MEM_REG before QEMU's first and shadows queue 0.
        let slots = run(&seed("mem_slots"));
        assert!(slots.rewritten >= 2, "{slots:?}");
        // Regions where the shadow was: it moves above them and queue 0 is still interposed.
        let moved = run(&seed("shadow_moved"));
        assert_eq!(moved.interposed, 1, "{moved:?}");
    }

    #[test]
    fn message_seeds_run_with_every_cut() {
        for (name, input) in seeds() {
            for cut in 0..=input.len() {
                eprintln!("{name} cut at {cut}");
                run(&input[..cut]);
            }
        }
    }

    #[test]
    fn message_seeds_on_disk_are_the_generated_ones() {
        // fuzz/seeds/proxy_messages holds seeds() for the proxy_messages fuzz target.
        crate::fuzzing::check_seeds_on_disk("proxy_messages", &seeds());
    }
}
