//! Throughput of the whole vhost-user path (relay, daemon, chain walk, record, device, display
//! socket) for full-screen frames. Ignored by default; run with
//! `cargo test --release -p vgt-capture --test throughput -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Instant;

use common::{Buf, DisplayAnswers, gpu};
use vgt_capture::server::SyncMode;
use vgt_capture::session::EndReason;
use vm_memory::{Bytes, GuestAddress};

fn run(sync: SyncMode, frames: u32, changing: bool) {
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let capture = dir.path().join("t.vgt");
    let listener = UnixListener::bind(&sock).unwrap();
    let client = UnixStream::connect(&sock).unwrap();
    let (server, _) = listener.accept().unwrap();
    let recorder = Arc::new(vgt_capture::recorder::Recorder::new(
        vgt_capture::sink::open_file(&capture, sync).unwrap(),
    ));
    let session = vgt_capture::session::Session::start(
        server,
        recorder.clone(),
        &vgt_capture::session::SessionConfig {
            device: vgt_device::DeviceConfig::default(),
        },
    )
    .unwrap();
    let mut fe = common::TestFrontend::handshake(client, DisplayAnswers::default());
    let (w, h) = (1024u32, 768u32);
    let len = (w * h * 4) as usize;
    let backing = fe.alloc(len);
    let full = [0, 0, w, h];
    for bufs in [
        vec![Buf::Out(gpu::create_2d(2, 2, w, h)), Buf::In(24)],
        vec![
            Buf::Out(gpu::attach_backing(2, 1)),
            Buf::Out(gpu::mem_entries(&[(backing, len as u32)])),
            Buf::In(24),
        ],
        vec![Buf::Out(gpu::set_scanout(0, 2, full)), Buf::In(24)],
    ] {
        fe.command(0, &bufs, true);
    }
    let mut pixels: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let start = Instant::now();
    for f in 0..frames {
        if changing {
            // A moving band of changed rows (like a scrolling console).
            let row = (f as usize * 16) % h as usize;
            for b in &mut pixels[row * w as usize * 4..(row + 16) * w as usize * 4] {
                *b = b.wrapping_add(1);
            }
            fe.mem.write_slice(&pixels, GuestAddress(backing)).unwrap();
        }
        fe.command(
            0,
            &[Buf::Out(gpu::transfer_2d(2, full, 0, None)), Buf::In(24)],
            true,
        );
        fe.command(0, &[Buf::Out(gpu::flush(2, full)), Buf::In(24)], true);
    }
    let took = start.elapsed();
    let stats = recorder.stats();
    drop(fe);
    session.end(EndReason::Disconnect).unwrap();
    let file = std::fs::metadata(&capture).unwrap().len();
    let guest_mb = f64::from(frames) * len as f64 / 1e6;
    println!(
        "{sync:?} changing={changing}: {frames} frames (1024x768) in {took:.2?}: \
         {:.1} frames/s, {:.0} commands/s, {:.1} MB/s of guest pixels; file {:.1} MB, \
         dedup {:.2}x",
        f64::from(frames) / took.as_secs_f64(),
        f64::from(2 * frames) / took.as_secs_f64(),
        guest_mb / took.as_secs_f64(),
        file as f64 / 1e6,
        stats.dedup_ratio()
    );
}

#[test]
#[ignore = "benchmark; run explicitly with --release"]
fn full_frames_through_the_vhost_user_path() {
    for sync in [SyncMode::CrashSafe, SyncMode::Buffered] {
        run(sync, 60, true);
        run(sync, 60, false);
    }
}
