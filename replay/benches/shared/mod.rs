//! What the replay benches share: flat guest RAM for direct execution, the hosts that direct
//! execution runs with (buffers handed back to the device as replay does), and a checked replay.
#![allow(dead_code)]

use vgt_device::display::Framebuffers;
use vgt_device::{DeviceHost, DisplayEvent, GuestMemory};
use vgt_format::CaptureReader;
use vgt_replay::{Quiet, ReplayOptions, Replayer};

/// Guest RAM as one flat buffer starting at `base`.
pub struct FlatRam {
    pub base: u64,
    pub bytes: Vec<u8>,
}

impl GuestMemory for FlatRam {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), vgt_device::MemoryError> {
        let off = addr
            .checked_sub(self.base)
            .filter(|o| o + buf.len() as u64 <= self.bytes.len() as u64)
            .ok_or(vgt_device::MemoryError::OutOfRange {
                addr,
                len: buf.len() as u64,
            })? as usize;
        buf.copy_from_slice(&self.bytes[off..off + buf.len()]);
        Ok(())
    }
}

/// Keeps each update's pixel buffer so that direct execution hands it back to the device
/// (`Device::recycle_pixels`), as replay does: the baseline gets the same buffer reuse.
pub struct NoHost(pub Vec<Vec<u8>>);
impl DeviceHost for NoHost {
    fn display(&mut self, event: DisplayEvent) {
        if let DisplayEvent::Update { pixels, .. } = event {
            self.0.push(pixels);
        }
    }
}

/// Composes the frames the way replay does (owned updates, replaced buffers handed back).
pub struct FbHost(pub Framebuffers, pub Vec<Vec<u8>>);
impl DeviceHost for FbHost {
    fn display(&mut self, event: DisplayEvent) {
        let (_, spare) = self.0.apply_owned_exact_returning(event);
        self.1.extend(spare);
    }
}

/// Replays `reader` and asserts it is identical. `VGT_BENCH_VERIFY_THREAD=0/1` forces frames to
/// be verified inline / on their own thread (default: replay decides from the cores available).
pub fn replay(reader: &CaptureReader) -> vgt_replay::ReplayReport {
    let verify_thread = std::env::var("VGT_BENCH_VERIFY_THREAD")
        .ok()
        .map(|v| v != "0");
    let options = ReplayOptions {
        verify_thread,
        ..ReplayOptions::default()
    };
    let report = Replayer::new(reader, options).run(&mut Quiet).unwrap();
    assert!(report.is_identical(), "{:?}", report.divergences.first());
    report
}
