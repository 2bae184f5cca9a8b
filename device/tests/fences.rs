//! Held-back completions: a renderer whose fences signal later (rutabaga 2D underneath, with
//! its fence signals delayed until the test releases them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use vgt_device::{
    CONTROL_QUEUE, CapsetDescriptor, Completion, Device, DeviceConfig, FenceInfo, Renderer,
    RendererError, RutabagaRenderer, Submission,
};
use vgt_format::wire::{Command, Format, Rect, Request, ResourceCreate2d};

/// Rutabaga 2D with fences that signal only when the test says so.
struct DelayedFences {
    inner: RutabagaRenderer,
    requested: Arc<Mutex<Vec<FenceInfo>>>,
    released: Arc<Mutex<Vec<FenceInfo>>>,
}

impl Renderer for DelayedFences {
    fn name(&self) -> &'static str {
        "delayed-fences"
    }
    fn num_capsets(&self) -> u32 {
        self.inner.num_capsets()
    }
    fn capset_info(&self, index: u32) -> Result<CapsetDescriptor, RendererError> {
        self.inner.capset_info(index)
    }
    fn capset(&self, id: u32, version: u32) -> Result<Vec<u8>, RendererError> {
        self.inner.capset(id, version)
    }
    fn create_2d(&mut self, id: u32, f: Format, w: u32, h: u32) -> Result<(), RendererError> {
        self.inner.create_2d(id, f, w, h)
    }
    fn create_guest_blob(&mut self, id: u32, flags: u32, size: u64) -> Result<(), RendererError> {
        self.inner.create_guest_blob(id, flags, size)
    }
    fn unref(&mut self, id: u32) -> Result<(), RendererError> {
        self.inner.unref(id)
    }
    fn transfer_write_2d(
        &mut self,
        id: u32,
        r: Rect,
        backing: &[u8],
        offset: u64,
        stride: u32,
    ) -> Result<(), RendererError> {
        self.inner.transfer_write_2d(id, r, backing, offset, stride)
    }
    fn transfer_read_2d(&mut self, id: u32, r: Rect, dst: &mut [u8]) -> Result<(), RendererError> {
        self.inner.transfer_read_2d(id, r, dst)
    }
    fn create_fence(&mut self, fence: FenceInfo) -> Result<(), RendererError> {
        self.requested.lock().unwrap().push(fence);
        Ok(())
    }
    fn take_signalled(&mut self, out: &mut Vec<FenceInfo>) {
        out.append(&mut self.released.lock().unwrap());
    }
}

fn create(resource_id: u32) -> Command {
    Command::ResourceCreate2d(ResourceCreate2d {
        resource_id,
        format: Format::B8G8R8X8_UNORM,
        width: 8,
        height: 8,
    })
}

#[test]
fn fenced_completions_wait_for_their_own_timeline() {
    let requested = Arc::new(Mutex::new(Vec::new()));
    let released = Arc::new(Mutex::new(Vec::new()));
    let renderer = DelayedFences {
        inner: RutabagaRenderer::new().unwrap(),
        requested: Arc::clone(&requested),
        released: Arc::clone(&released),
    };
    let mut dev = Device::with_renderer(DeviceConfig::default(), Box::new(renderer)).unwrap();
    let mem = VecMemory::new(&[(0, 4096)]);
    let mut host = RecordingHost::default();
    let submit = |dev: &mut Device, host: &mut RecordingHost, token: u64, req: Request| {
        dev.submit(
            Submission {
                queue: CONTROL_QUEUE,
                token,
                request: &req.encode(),
                writable_len: 24,
            },
            &mem,
            host,
        )
    };
    let tokens = |v: &[Completion]| v.iter().map(|c| c.token).collect::<Vec<_>>();

    assert!(submit(&mut dev, &mut host, 1, fenced(create(1), 1)).is_empty());
    assert!(submit(&mut dev, &mut host, 2, fenced_ring(create(2), 2, 1, 0)).is_empty());
    assert!(submit(&mut dev, &mut host, 3, fenced(create(3), 3)).is_empty());
    // Unfenced work is answered at once, fenced work is not.
    assert_eq!(
        tokens(&submit(&mut dev, &mut host, 4, Request::new(create(4)))),
        vec![4]
    );
    assert_eq!(dev.pending_fences(), 3);
    assert_eq!(requested.lock().unwrap().len(), 3);

    // Global fence 3 signals: it completes fences 1 and 3 in submission order, not ring (1, 0).
    let global3 = requested.lock().unwrap()[2];
    released.lock().unwrap().push(global3);
    let done = dev.poll(&mut host);
    assert_eq!(tokens(&done), vec![1, 3]);
    assert_eq!(header_of(&done[0].response).fence_id, 1);
    assert_eq!(host.fences, vec![global3]);
    assert_eq!(dev.pending_fences(), 1);

    // The context ring's fence releases its command, which echoes ctx and ring.
    let ring = requested.lock().unwrap()[1];
    released.lock().unwrap().push(ring);
    let done = submit(
        &mut dev,
        &mut host,
        5,
        Request::new(Command::GetDisplayInfo),
    );
    assert_eq!(tokens(&done), vec![5, 2]);
    let h = header_of(&done[1].response);
    assert_eq!((h.flags, h.fence_id, h.ctx_id, h.ring_idx), (3, 2, 1, 0));
    assert_eq!(dev.pending_fences(), 0);

    // Reset drops whatever still waits.
    assert!(submit(&mut dev, &mut host, 6, fenced(create(6), 9)).is_empty());
    dev.reset();
    assert_eq!(dev.pending_fences(), 0);
}
