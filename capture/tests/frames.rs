//! Frame records through the real vhost-user path: each one holds the whole scanout as it is
//! after the flush, also when a flush leaves the picture unchanged (then the backend reuses the
//! previous Frame payload rather than storing the scanout again).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{Buf, DisplayAnswers, gpu, start_in_process};
use vgt_format::record::RecordBody;
use vm_memory::{Bytes, GuestAddress};

const W: u32 = 32;
/// VHOST_USER_GPU_UPDATE.
const UPDATE: u32 = 8;
const H: u32 = 16;

fn pixels(seed: u32) -> Vec<u8> {
    (0..W * H)
        .flat_map(|i| {
            let v = i.wrapping_mul(2654435761).wrapping_add(seed);
            [v as u8, (v >> 8) as u8, (v >> 16) as u8, 0]
        })
        .collect()
}

/// Sends `bufs` on the control queue and checks the response is OK_NODATA.
fn ok(t: &mut common::InProcess, bufs: Vec<Buf>) {
    let (_, _, r) = t.fe.command(0, &bufs, true);
    assert_eq!(gpu::resp_type(&r), 0x1100);
}

/// Resource 2 of `w`x`h` in virtio `format` (4 bytes a pixel, as every 2D format), backed by
/// the `w * h * 4` bytes at `backing`, on scanout 0.
fn scanout_resource(t: &mut common::InProcess, format: u32, w: u32, h: u32, backing: u64) {
    ok(
        t,
        vec![Buf::Out(gpu::create_2d(2, format, w, h)), Buf::In(24)],
    );
    ok(
        t,
        vec![
            Buf::Out(gpu::attach_backing(2, 1)),
            Buf::Out(gpu::mem_entries(&[(backing, w * h * 4)])),
            Buf::In(24),
        ],
    );
    ok(
        t,
        vec![Buf::Out(gpu::set_scanout(0, 2, [0, 0, w, h])), Buf::In(24)],
    );
}

#[test]
fn unchanged_flushes_reuse_the_frame_payload_and_changed_ones_store_the_new_picture() {
    let mut t = start_in_process(DisplayAnswers::default());
    let a = pixels(1);
    let backing = t.fe.put(&a);
    let full = [0, 0, W, H];
    let rect = [4, 2, 8, 4];
    scanout_resource(&mut t, 2, W, H, backing);
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
    let (reader, records) = t.finish();
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

/// A whole-resource transfer followed by a whole-resource flush: the UPDATE sent to QEMU is a
/// copy of the transfer's memory read, and the capture stores it as that read's blob (no second
/// look at the pixels). The recorded UPDATE and Frame must still be exactly what QEMU received,
/// also when a partial transfer or a converting format make the picture differ from the read.
#[test]
fn whole_frame_update_shares_the_memory_read_payload_and_holds_what_qemu_got() {
    // 128 KiB: above the size from which the backend reuses a read's payload.
    const BW: u32 = 256;
    const BH: u32 = 128;
    let len = (BW * BH * 4) as usize;
    let picture = |seed: u32| -> Vec<u8> {
        (0..BW * BH)
            .flat_map(|i| {
                let v = i.wrapping_mul(2654435761).wrapping_add(seed);
                [v as u8, (v >> 8) as u8, (v >> 16) as u8, (v >> 24) as u8]
            })
            .collect()
    };
    // virtio formats: B8G8R8X8 (bytes as QEMU wants them) and R8G8B8X8 (the device swaps R
    // and B).
    for (format, swaps) in [(2u32, false), (134, true)] {
        let mut t = start_in_process(DisplayAnswers::default());
        let a = picture(format);
        let backing = t.fe.put(&a);
        let full = [0, 0, BW, BH];
        scanout_resource(&mut t, format, BW, BH, backing);
        let transfer = |r: [u32; 4]| {
            let offset = u64::from((r[1] * BW + r[0]) * 4);
            vec![Buf::Out(gpu::transfer_2d(2, r, offset, None)), Buf::In(24)]
        };
        let flush = vec![Buf::Out(gpu::flush(2, full)), Buf::In(24)];
        // Picture A, whole; then a rectangle of it changed and transferred alone.
        ok(&mut t, transfer(full));
        ok(&mut t, flush.clone());
        let mut b = a.clone();
        let rect = [16, 8, 32, 16];
        for row in rect[1]..rect[1] + rect[3] {
            let o = ((row * BW + rect[0]) * 4) as usize;
            for x in &mut b[o..o + rect[2] as usize * 4] {
                *x ^= 0x5A;
            }
        }
        t.fe.mem.write_slice(&b, GuestAddress(backing)).unwrap();
        ok(&mut t, transfer(rect));
        ok(&mut t, flush);
        let updates: Vec<Vec<u8>> =
            t.fe.wait_display_until(|m| m.iter().filter(|m| m.request == UPDATE).count() >= 3)
                .into_iter()
                .filter(|m| m.request == UPDATE)
                .map(|m| m.payload[20..].to_vec())
                .collect();
        let (reader, records) = t.finish();
        assert!(reader.health().is_clean(), "{:?}", reader.health());
        let reads: Vec<_> = records
            .iter()
            .filter_map(|r| match &r.body {
                RecordBody::MemoryRead(m) => Some(m.data.clone()),
                _ => None,
            })
            .collect();
        let recorded_updates: Vec<_> = records
            .iter()
            .filter_map(|r| match &r.body {
                RecordBody::GpuSocket(g) if g.request == UPDATE => g.data.clone(),
                _ => None,
            })
            .collect();
        let frames: Vec<_> = records
            .iter()
            .filter_map(|r| match &r.body {
                RecordBody::Frame(f) => Some(f.pixels.clone()),
                _ => None,
            })
            .collect();
        // SET_SCANOUT's black picture, then the two flushes.
        assert_eq!(updates.len(), 3, "format {format}");
        assert_eq!(recorded_updates.len(), 3, "format {format}");
        assert_eq!(frames.len(), 3, "format {format}");
        let shown = |want: &[u8]| -> Vec<u8> {
            let mut p = want.to_vec();
            if swaps {
                for px in p.chunks_exact_mut(4) {
                    px.swap(0, 2);
                }
            }
            p
        };
        for (i, want) in [None, Some(&a), Some(&b)].into_iter().enumerate() {
            let got = reader.read_payload(&recorded_updates[i]).unwrap();
            assert!(
                got[..] == updates[i][..],
                "format {format}: recorded UPDATE {i} is not what QEMU received"
            );
            assert_eq!(frames[i], recorded_updates[i], "format {format}: frame {i}");
            if let Some(want) = want {
                assert!(got[..] == shown(want)[..], "format {format}: update {i}");
            }
        }
        // The whole-frame read (the first) and the first flush's picture: one payload when
        // the format needs no conversion. The second picture is no read's copy.
        assert_eq!(reads[0].len(), len as u64);
        assert_eq!(recorded_updates[1] == reads[0], !swaps, "format {format}");
        assert!(
            reads.iter().all(|r| *r != recorded_updates[2]),
            "format {format}"
        );
        // And it was not stored a second time (which the file's dedup would have resolved to
        // the same blob, after hashing it): no payload of this capture was stored twice.
        let stats = reader.index_stats().expect("an index");
        assert_eq!(stats.payloads.dedup_hits, 0, "format {format}");
    }
}
