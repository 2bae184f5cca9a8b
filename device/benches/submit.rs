//! Throughput of `Device::submit` on rutabaga 2D: cursor moves, small commands, and frames.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vgt_device::{
    CONTROL_QUEUE, CURSOR_QUEUE, Device, DeviceConfig, DeviceHost, GuestMemory, MemoryError,
    Submission,
};
use vgt_format::wire::{
    Command, Format, MemEntry, Rect, Request, ResourceAttachBacking, ResourceCreate2d,
    ResourceFlush, SetScanout, TransferToHost2d, UpdateCursor,
};

const W: u32 = 1280;
const H: u32 = 800;
const FRAME: usize = (W * H * 4) as usize;

/// One flat RAM region at guest address 0.
struct Ram(Vec<u8>);

impl GuestMemory for Ram {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        let src = usize::try_from(addr)
            .ok()
            .and_then(|a| self.0.get(a..a + buf.len()))
            .ok_or(MemoryError::OutOfRange { addr, len })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

struct NullHost;
impl DeviceHost for NullHost {}

fn submit(dev: &mut Device, mem: &Ram, queue: u16, bytes: &[u8], writable_len: u32) -> usize {
    dev.submit(
        Submission {
            queue,
            token: 1,
            request: bytes,
            writable_len,
        },
        mem,
        &mut NullHost,
    )
    .len()
}

/// A device showing a 1280x800 resource backed by 4 KiB pages, as Linux's fbdev sets it up.
fn booted() -> (Device, Ram) {
    let mem = Ram((0..FRAME * 2).map(|i| i as u8).collect());
    let mut dev = Device::new(DeviceConfig {
        scanouts: vec![(W, H)],
        ..DeviceConfig::default()
    })
    .unwrap();
    // Pages in reverse order so that no two are contiguous: the worst case for coalescing.
    let pages = FRAME / 4096;
    let entries: Vec<MemEntry> = (0..pages)
        .map(|p| MemEntry {
            addr: ((pages - 1 - p) * 2 * 4096) as u64,
            length: 4096,
            padding: 0,
        })
        .collect();
    for cmd in [
        Command::ResourceCreate2d(ResourceCreate2d {
            resource_id: 2,
            format: Format::B8G8R8X8_UNORM,
            width: W,
            height: H,
        }),
        Command::ResourceAttachBacking(ResourceAttachBacking {
            resource_id: 2,
            nr_entries: entries.len() as u32,
            entries,
        }),
        Command::SetScanout(SetScanout {
            r: full(),
            scanout_id: 0,
            resource_id: 2,
        }),
    ] {
        submit(
            &mut dev,
            &mem,
            CONTROL_QUEUE,
            &Request::new(cmd).encode(),
            24,
        );
    }
    (dev, mem)
}

fn full() -> Rect {
    Rect {
        x: 0,
        y: 0,
        width: W,
        height: H,
    }
}

fn transfer_flush(r: Rect) -> (Vec<u8>, Vec<u8>) {
    let t = Request::new(Command::TransferToHost2d(TransferToHost2d {
        r,
        offset: u64::from(r.y) * u64::from(W) * 4 + u64::from(r.x) * 4,
        resource_id: 2,
        padding: 0,
    }))
    .encode();
    let f = Request::new(Command::ResourceFlush(ResourceFlush {
        r,
        resource_id: 2,
        padding: 0,
    }))
    .encode();
    (t, f)
}

fn benches(c: &mut Criterion) {
    let (mut dev, mem) = booted();
    let mut g = c.benchmark_group("submit");

    let mv = Request::new(Command::MoveCursor(UpdateCursor::default())).encode();
    g.throughput(Throughput::Elements(1));
    g.bench_function("move_cursor", |b| {
        b.iter(|| submit(&mut dev, &mem, CURSOR_QUEUE, black_box(&mv), 0))
    });
    let info = Request::new(Command::GetDisplayInfo).encode();
    g.bench_function("get_display_info", |b| {
        b.iter(|| submit(&mut dev, &mem, CONTROL_QUEUE, black_box(&info), 408))
    });

    let (t, f) = transfer_flush(Rect {
        x: 100,
        y: 200,
        width: 64,
        height: 16,
    });
    g.throughput(Throughput::Bytes(64 * 16 * 4));
    g.bench_function("transfer_flush_64x16", |b| {
        b.iter(|| {
            submit(&mut dev, &mem, CONTROL_QUEUE, &t, 24);
            submit(&mut dev, &mem, CONTROL_QUEUE, &f, 24)
        })
    });

    let (t, f) = transfer_flush(full());
    g.throughput(Throughput::Bytes(FRAME as u64));
    g.sample_size(20);
    g.bench_function("transfer_1280x800", |b| {
        b.iter(|| submit(&mut dev, &mem, CONTROL_QUEUE, &t, 24))
    });
    g.bench_function("transfer_flush_1280x800", |b| {
        b.iter(|| {
            submit(&mut dev, &mem, CONTROL_QUEUE, &t, 24);
            submit(&mut dev, &mem, CONTROL_QUEUE, &f, 24)
        })
    });
    g.finish();
}

criterion_group!(submit_benches, benches);
criterion_main!(submit_benches);
