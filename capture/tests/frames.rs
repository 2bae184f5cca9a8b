//! Frame records through the real vhost-user path: each one holds the whole scanout as it is
//! after the flush, also when a flush leaves the picture unchanged (then the backend reuses the
//! previous Frame payload rather than storing the scanout again).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{Buf, DisplayAnswers, gpu, start_in_process};
use vgt_capture::session::EndReason;
use vgt_format::record::RecordBody;
use vm_memory::{Bytes, GuestAddress};

const W: u32 = 32;
const H: u32 = 16;

fn pixels(seed: u32) -> Vec<u8> {
    (0..W * H)
        .flat_map(|i| {
            let v = i.wrapping_mul(2654435761).wrapping_add(seed);
            [v as u8, (v >> 8) as u8, (v >> 16) as u8, 0]
        })
        .collect()
}

#[test]
fn unchanged_flushes_reuse_the_frame_payload_and_changed_ones_store_the_new_picture() {
    let mut t = start_in_process(DisplayAnswers::default());
    let len = (W * H * 4) as usize;
    let a = pixels(1);
    let backing = t.fe.put(&a);
    let full = [0, 0, W, H];
    let rect = [4, 2, 8, 4];
    let ok = |t: &mut common::InProcess, bufs: Vec<Buf>| {
        let (_, _, r) = t.fe.command(0, &bufs, true);
        assert_eq!(gpu::resp_type(&r), 0x1100);
    };
    ok(
        &mut t,
        vec![Buf::Out(gpu::create_2d(2, 2, W, H)), Buf::In(24)],
    );
    ok(
        &mut t,
        vec![
            Buf::Out(gpu::attach_backing(2, 1)),
            Buf::Out(gpu::mem_entries(&[(backing, len as u32)])),
            Buf::In(24),
        ],
    );
    ok(
        &mut t,
        vec![Buf::Out(gpu::set_scanout(0, 2, full)), Buf::In(24)],
    );
    // The backing offset of a rectangle's first pixel (stride W * 4).
    let transfer = |r: [u32; 4]| {
        let offset = u64::from((r[1] * W + r[0]) * 4);
        vec![Buf::Out(gpu::transfer_2d(2, r, offset, None)), Buf::In(24)]
    };
    let flush = |r| vec![Buf::Out(gpu::flush(2, r)), Buf::In(24)];
    // Frame 0: picture A. Frames 1 and 2: flushes that change nothing.
    ok(&mut t, transfer(full));
    ok(&mut t, flush(full));
    ok(&mut t, flush(full));
    ok(&mut t, flush(rect));
    // Frame 3: picture B (A with a changed rectangle). Frame 4: B again.
    let mut b = a.clone();
    for row in rect[1]..rect[1] + rect[3] {
        for col in rect[0]..rect[0] + rect[2] {
            let o = ((row * W + col) * 4) as usize;
            b[o] ^= 0xFF;
        }
    }
    t.fe.mem.write_slice(&b, GuestAddress(backing)).unwrap();
    ok(&mut t, transfer(rect));
    ok(&mut t, flush(rect));
    ok(&mut t, transfer(full));
    ok(&mut t, flush(full));
    // Frame 5: back to A.
    t.fe.mem.write_slice(&a, GuestAddress(backing)).unwrap();
    ok(&mut t, transfer(full));
    ok(&mut t, flush(full));
    let common::InProcess {
        fe,
        session,
        capture,
        dir: _dir,
    } = t;
    drop(fe);
    session.end(EndReason::Disconnect).unwrap();

    let (reader, records) = common::read_capture(&capture);
    assert!(reader.health().is_clean(), "{:?}", reader.health());
    let frames: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Frame(f) => Some(f),
            _ => None,
        })
        .collect();
    // SET_SCANOUT shows the (still black) resource: a frame before the six flushes.
    assert_eq!(frames.len(), 7);
    assert!(
        reader
            .read_payload(&frames[0].pixels)
            .unwrap()
            .iter()
            .all(|&b| b == 0)
    );
    let frames = &frames[1..];
    let picture = |i: usize| reader.read_payload(&frames[i].pixels).unwrap().into_owned();
    for (i, want) in [&a, &a, &a, &b, &b, &a].into_iter().enumerate() {
        assert!(
            &picture(i) == want,
            "frame {i} differs from the guest's picture"
        );
        assert_eq!((frames[i].width, frames[i].height), (W, H));
    }
    assert_eq!(frames[2].rect, rect);
    assert_eq!(frames[1].pixels, frames[0].pixels);
    assert_eq!(frames[2].pixels, frames[0].pixels);
    assert_ne!(frames[3].pixels, frames[2].pixels);
    assert_eq!(frames[4].pixels, frames[3].pixels);
    // Picture A again: a new store, which the file's dedup resolves to A's blob.
    assert_eq!(picture(5), picture(0));
}
