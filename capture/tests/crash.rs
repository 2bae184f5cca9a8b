//! A renderer panic inside the device: caught, recorded as a Crash lifecycle record naming the
//! command (which is already in the file), and the session ends with the file finished.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

use common::{Buf, DisplayAnswers, TestFrontend, gpu};
use vgt_capture::recorder::Recorder;
use vgt_capture::session::{EndReason, Session};
use vgt_device::renderer::{CapsetDescriptor, Renderer, RendererError, RutabagaRenderer};
use vgt_device::{Device, DeviceConfig, FenceInfo};
use vgt_format::record::{LifecycleKind, RecordBody};
use vgt_format::wire::{Format, Rect};

/// Rutabaga 2D, except that creating resource 0xBAD panics (a renderer bug on demand).
struct Panicky(RutabagaRenderer);

impl Renderer for Panicky {
    fn name(&self) -> &'static str {
        "panicky"
    }
    fn num_capsets(&self) -> u32 {
        self.0.num_capsets()
    }
    fn capset_info(&self, index: u32) -> Result<CapsetDescriptor, RendererError> {
        self.0.capset_info(index)
    }
    fn capset(&self, capset_id: u32, version: u32) -> Result<Vec<u8>, RendererError> {
        self.0.capset(capset_id, version)
    }
    fn create_2d(&mut self, id: u32, f: Format, w: u32, h: u32) -> Result<(), RendererError> {
        assert!(id != 0xBAD, "renderer bug: resource 0xbad");
        self.0.create_2d(id, f, w, h)
    }
    fn create_guest_blob(&mut self, id: u32, flags: u32, size: u64) -> Result<(), RendererError> {
        self.0.create_guest_blob(id, flags, size)
    }
    fn unref(&mut self, id: u32) -> Result<(), RendererError> {
        self.0.unref(id)
    }
    fn transfer_write_2d(
        &mut self,
        id: u32,
        rect: Rect,
        backing: &[u8],
        offset: u64,
        stride: u32,
    ) -> Result<(), RendererError> {
        self.0.transfer_write_2d(id, rect, backing, offset, stride)
    }
    fn transfer_read_2d(
        &mut self,
        id: u32,
        rect: Rect,
        dst: &mut [u8],
    ) -> Result<(), RendererError> {
        self.0.transfer_read_2d(id, rect, dst)
    }
    fn create_fence(&mut self, fence: FenceInfo) -> Result<(), RendererError> {
        self.0.create_fence(fence)
    }
    fn take_signalled(&mut self, out: &mut Vec<FenceInfo>) {
        self.0.take_signalled(out)
    }
}

#[test]
fn renderer_panic_is_recorded_with_its_command_and_the_file_finished() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let capture = dir.path().join("crash.vgt");
    let listener = UnixListener::bind(&sock).unwrap();
    let client = UnixStream::connect(&sock).unwrap();
    let (server, _) = listener.accept().unwrap();
    let sink =
        vgt_capture::sink::open_file(&capture, vgt_capture::server::SyncMode::CrashSafe).unwrap();
    let recorder = Arc::new(Recorder::new(sink));
    let device = Device::with_renderer(
        DeviceConfig::default(),
        Box::new(Panicky(RutabagaRenderer::new().unwrap())),
    )
    .unwrap();
    let session = Session::start_with_device(server, recorder, device).unwrap();
    let mut fe = TestFrontend::handshake(client, DisplayAnswers::default());
    let (_, _, r) = fe.command(
        0,
        &[Buf::Out(gpu::create_2d(1, 2, 8, 8)), Buf::In(24)],
        false,
    );
    assert_eq!(gpu::resp_type(&r), 0x1100);
    let bad = gpu::create_2d(0xBAD, 2, 8, 8);
    fe.push(0, &[Buf::Out(bad.clone()), Buf::In(24)], false);
    let reason = common::wait_end(&session, "no crash reported");
    assert_eq!(reason, EndReason::Crash);
    assert!(
        fe.no_used_within(0, Duration::from_millis(20)),
        "the crashed command is not completed"
    );
    session.end(reason).unwrap();
    drop(fe);

    let (reader, records) = common::read_capture(&capture);
    assert!(reader.health().is_clean());
    let (id, cmd) = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match &r.body {
            RecordBody::Command(c) => Some((i as u64, c)),
            _ => None,
        })
        .next_back()
        .unwrap();
    assert_eq!(
        reader.read_payload(&cmd.request).unwrap().as_ref(),
        &bad[..]
    );
    let crash = records
        .iter()
        .find_map(|r| match &r.body {
            RecordBody::Lifecycle(l) if l.kind == LifecycleKind::Crash => Some(l.clone()),
            _ => None,
        })
        .expect("crash record");
    assert_eq!(crash.command, Some(id));
    assert!(
        crash.message.contains("renderer bug: resource 0xbad"),
        "{}",
        crash.message
    );
    let end = records.last().unwrap();
    assert!(
        matches!(&end.body, RecordBody::Lifecycle(l) if l.kind == LifecycleKind::End && l.message == "device crashed")
    );
}
