//! Temporary stand-in for vgt-device (branch `device`) with the agreed API, so vgt-capture
//! builds and its plumbing can be tested before the real device lands. Replaced on merge.
#![allow(missing_docs)]

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    #[error("out of range {addr:#x}+{len:#x}")]
    OutOfRange { addr: u64, len: u64 },
    #[error("failed {addr:#x}+{len:#x}: {reason}")]
    Failed { addr: u64, len: u64, reason: String },
}

pub trait GuestMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError>;
    fn contains(&self, addr: u64, len: u64) -> bool {
        let _ = (addr, len);
        true
    }
}

#[derive(Debug, Clone)]
pub enum DisplayEvent {
    Scanout {
        scanout_id: u32,
        width: u32,
        height: u32,
    },
    Update {
        scanout_id: u32,
        resource_id: u32,
        x: u32,
        y: u32,
        width: u32,
        height: u32,
        format: u32,
        stride: u32,
        pixels: Vec<u8>,
    },
    CursorUpdate {
        scanout_id: u32,
        x: u32,
        y: u32,
        hot_x: u32,
        hot_y: u32,
        resource_id: u32,
        image: Box<[u8; 16384]>,
    },
    CursorMove {
        scanout_id: u32,
        x: u32,
        y: u32,
    },
    CursorHide {
        scanout_id: u32,
        x: u32,
        y: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostDisplay {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub enabled: bool,
    pub flags: u32,
}

#[derive(Debug, Clone, Default)]
pub struct DisplayInfoFromHost {
    pub displays: Vec<HostDisplay>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct FenceInfo {
    pub flags: u32,
    pub fence_id: u64,
    pub ctx_id: u32,
    pub ring_idx: u8,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("validation: {detail}")]
pub struct ValidationError {
    pub detail: String,
}

pub trait DeviceHost {
    fn memory_read(&mut self, _resource_id: u32, _addr: u64, _data: &[u8]) {}
    fn display(&mut self, _event: DisplayEvent) {}
    fn display_info(&mut self) -> Option<DisplayInfoFromHost> {
        None
    }
    fn edid(&mut self, _scanout: u32) -> Option<Vec<u8>> {
        None
    }
    fn fence_signalled(&mut self, _fence: FenceInfo) {}
    fn validation_error(&mut self, _token: u64, _err: &ValidationError) {}
}

pub struct Submission<'a> {
    pub queue: u16,
    pub token: u64,
    pub request: &'a [u8],
    pub writable_len: u32,
}

pub struct Completion {
    pub token: u64,
    pub response: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub struct DeviceConfig {
    pub num_scanouts: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("device error")]
pub struct DeviceError;

/// Trivial device: answers every command with OK_NODATA, panics on command 0xdead.
pub struct Device {
    cfg: DeviceConfig,
}

impl Device {
    pub fn new(cfg: DeviceConfig) -> Result<Device, DeviceError> {
        Ok(Device { cfg })
    }
    pub fn features(&self) -> u64 {
        1 << 1
    }
    pub fn config_space(&self) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[8..12].copy_from_slice(&self.cfg.num_scanouts.to_le_bytes());
        c
    }
    pub fn submit(
        &mut self,
        s: Submission<'_>,
        mem: &dyn GuestMemory,
        host: &mut dyn DeviceHost,
    ) -> Vec<Completion> {
        let ty = s
            .request
            .get(0..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        if ty == 0xdead {
            panic!("stub device asked to crash");
        }
        if ty == 0x0104 {
            let mut px = vec![0u8; 16];
            let _ = mem.read(0, &mut px);
            host.memory_read(1, 0, &px);
            host.display(DisplayEvent::Update {
                scanout_id: 0,
                resource_id: 1,
                x: 0,
                y: 0,
                width: 2,
                height: 2,
                format: 2,
                stride: 8,
                pixels: px,
            });
        }
        if ty == 0x0100 {
            let _ = host.display_info();
        }
        if s.queue == 1 || s.writable_len == 0 {
            return vec![Completion {
                token: s.token,
                response: Vec::new(),
            }];
        }
        let mut r = vec![0u8; 24];
        r[0..4].copy_from_slice(&0x1100u32.to_le_bytes());
        vec![Completion {
            token: s.token,
            response: r,
        }]
    }
    pub fn reset(&mut self) {}
}
