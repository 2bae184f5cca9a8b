//! Dmabuf scanouts in proxy mode: the proxy keeps the descriptor of each DMABUF_SCANOUT(2)
//! (QEMU gets its own copy, forwarded unchanged), maps linear dmabufs read-only (other files,
//! such as memfds, which their owner could truncate under a mapping, are read with pread) and
//! reads the pixels of the visible rectangle at the scanout and of each DMABUF_UPDATE's damaged
//! rectangle (bracketed by DMA_BUF_IOCTL_SYNC when the descriptor is a real dmabuf). A buffer
//! that cannot be read (not mappable, tiled modifier, unknown format, rectangle outside the
//! buffer) keeps a reason instead; its messages are still relayed and recorded.

use std::os::fd::{AsRawFd, OwnedFd};

use crate::display::to_bgrx;
use vgt_device::display::MAX_FRAMEBUFFER_BYTES;

/// Wire size of `VhostUserGpuDMABUFScanout`.
pub const SCANOUT_LEN: usize = 40;
/// Wire size of `VhostUserGpuDMABUFScanout2` (the scanout plus a u64 modifier).
pub const SCANOUT2_LEN: usize = 48;
/// DRM_FORMAT_MOD_LINEAR.
pub const MOD_LINEAR: u64 = 0;

/// `DMA_BUF_IOCTL_SYNC`: `_IOW('b', 0, struct dma_buf_sync)`.
const DMA_BUF_IOCTL_SYNC: libc::c_ulong = 0x4008_6200;
/// `DMA_BUF_SYNC_READ`.
const SYNC_READ: u64 = 1;
/// `DMA_BUF_SYNC_START`.
const SYNC_START: u64 = 0;
/// `DMA_BUF_SYNC_END`.
const SYNC_END: u64 = 4;

const fn fourcc(c: &[u8; 4]) -> u32 {
    (c[0] as u32) | ((c[1] as u32) << 8) | ((c[2] as u32) << 16) | ((c[3] as u32) << 24)
}

/// The virtio-gpu format code whose byte order matches a 32-bit DRM format (for
/// [`to_bgrx`]), or `None` when the proxy cannot convert it.
pub fn virtio_format_of(drm_fourcc: u32) -> Option<u32> {
    // DRM formats name the channels of a little-endian u32 from high to low bits, so
    // XRGB8888 is B, G, R, X in memory.
    const XRGB: u32 = fourcc(b"XR24");
    const ARGB: u32 = fourcc(b"AR24");
    const XBGR: u32 = fourcc(b"XB24");
    const ABGR: u32 = fourcc(b"AB24");
    const RGBX: u32 = fourcc(b"RX24");
    const RGBA: u32 = fourcc(b"RA24");
    const BGRX: u32 = fourcc(b"BX24");
    const BGRA: u32 = fourcc(b"BA24");
    match drm_fourcc {
        XRGB => Some(2),   // B8G8R8X8
        ARGB => Some(1),   // B8G8R8A8
        XBGR => Some(134), // R8G8B8X8
        ABGR => Some(67),  // R8G8B8A8
        RGBX => Some(68),  // X8B8G8R8
        RGBA => Some(121), // A8B8G8R8
        BGRX => Some(4),   // X8R8G8B8
        BGRA => Some(3),   // A8R8G8B8
        _ => None,
    }
}

/// The metadata of a DMABUF_SCANOUT or DMABUF_SCANOUT2 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanoutInfo {
    /// Scanout index.
    pub scanout_id: u32,
    /// Visible rectangle within the buffer: x, y, width, height.
    pub rect: [u32; 4],
    /// Buffer width in pixels.
    pub fd_width: u32,
    /// Buffer height in rows.
    pub fd_height: u32,
    /// Bytes per row.
    pub fd_stride: u32,
    /// `fd_flags` (Y_0_TOP); not applied to the pixels.
    pub fd_flags: u32,
    /// DRM fourcc.
    pub fd_drm_fourcc: u32,
    /// Format modifier (DMABUF_SCANOUT2 only; `None` for DMABUF_SCANOUT, which means linear).
    pub modifier: Option<u64>,
}

fn le32(p: &[u8], i: usize) -> u32 {
    p.get(4 * i..4 * i + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

impl ScanoutInfo {
    /// Parses the payload; `None` when it is shorter than the message's struct.
    pub fn parse(payload: &[u8], with_modifier: bool) -> Option<ScanoutInfo> {
        let need = if with_modifier {
            SCANOUT2_LEN
        } else {
            SCANOUT_LEN
        };
        if payload.len() < need {
            return None;
        }
        let modifier = with_modifier
            .then(|| payload.get(40..48)?.try_into().ok().map(u64::from_le_bytes))
            .flatten();
        Some(ScanoutInfo {
            scanout_id: le32(payload, 0),
            rect: [
                le32(payload, 1),
                le32(payload, 2),
                le32(payload, 3),
                le32(payload, 4),
            ],
            fd_width: le32(payload, 5),
            fd_height: le32(payload, 6),
            fd_stride: le32(payload, 7),
            fd_flags: le32(payload, 8),
            fd_drm_fourcc: le32(payload, 9),
            modifier,
        })
    }

    /// True for the "disable" form (no picture).
    pub fn is_disable(&self) -> bool {
        self.rect[2] == 0 || self.rect[3] == 0
    }
}

/// A read-only shared mapping, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is only read through `&self`, and munmap in Drop happens once.
unsafe impl Send for Mapping {}

impl Mapping {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is a live PROT_READ mapping of `len` bytes that lasts as long as
        // `self`; the file was at least `len` bytes long when mapped.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping the region this value mapped; nothing borrows it any more.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

/// How the proxy reads a readable buffer.
#[derive(Debug)]
enum Access {
    /// A real dmabuf: mapped, reads bracketed by DMA_BUF_IOCTL_SYNC. A dmabuf cannot shrink,
    /// so the mapping stays valid.
    Mapped(Mapping),
    /// Any other file (a memfd, a regular file): read with pread(2). The backend could
    /// truncate such a file while the proxy reads it; a mapping would then raise SIGBUS and
    /// take the proxy down, pread only comes back short.
    Pread,
}

/// One dmabuf scanout the proxy holds: the descriptor and, when readable, how to read it.
#[derive(Debug)]
pub struct DmabufScanout {
    /// The metadata.
    pub info: ScanoutInfo,
    /// The proxy's descriptor (closed on drop, after the mapping).
    map: Result<Access, String>,
    fd: OwnedFd,
    /// The descriptor accepts DMA_BUF_IOCTL_SYNC (a real dmabuf, not a memfd).
    sync: bool,
    /// virtio format code of the pixels.
    format: u32,
}

fn errno_text(what: &str) -> String {
    let e = std::io::Error::last_os_error();
    let n = e.raw_os_error().unwrap_or(0);
    let full = e.to_string();
    let text = full.split(" (os error").next().unwrap_or(&full);
    format!("{what} failed: errno {n} ({text})")
}

/// Size of the file behind `fd` (memfd: its length; dmabuf: the buffer size).
fn fd_size(fd: &OwnedFd) -> Result<u64, String> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor we own, writing into `st`.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(errno_text("fstat"));
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size > 0 {
        return Ok(size);
    }
    // dma-buf files answer SEEK_END with their size (without moving the shared offset).
    // SAFETY: lseek on a descriptor we own.
    let end = unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_END) };
    if end < 0 {
        return Err(errno_text("lseek(SEEK_END)"));
    }
    Ok(u64::try_from(end).unwrap_or(0))
}

impl DmabufScanout {
    /// Takes the proxy's descriptor of a scanout and maps it when the layout can be read.
    /// Never fails: an unreadable buffer keeps the reason (see [`DmabufScanout::unreadable`]).
    pub fn new(info: ScanoutInfo, fd: OwnedFd) -> DmabufScanout {
        let format = virtio_format_of(info.fd_drm_fourcc).unwrap_or(2);
        let map = Self::map(&info, &fd);
        let sync = map.is_ok()
            && sync_ioctl(&fd, SYNC_START | SYNC_READ).is_ok()
            && sync_ioctl(&fd, SYNC_END | SYNC_READ).is_ok();
        let map = map.map(|m| {
            if sync {
                Access::Mapped(m)
            } else {
                Access::Pread
            }
        });
        DmabufScanout {
            info,
            map,
            fd,
            sync,
            format,
        }
    }

    fn map(info: &ScanoutInfo, fd: &OwnedFd) -> Result<Mapping, String> {
        if let Some(m) = info.modifier
            && m != MOD_LINEAR
        {
            return Err(format!(
                "modifier {m:#x} is not linear: the layout cannot be read as pixels"
            ));
        }
        if virtio_format_of(info.fd_drm_fourcc).is_none() {
            return Err(format!(
                "DRM format {:#x} is not a 32-bit RGB format the proxy converts",
                info.fd_drm_fourcc
            ));
        }
        let [x, y, w, h] = info.rect.map(u64::from);
        // The visible rectangle is read whole at the scanout, into one buffer that becomes the
        // framebuffer: no larger than a framebuffer can be (a backend's sparse memfd can claim
        // any size).
        if w * h > MAX_FRAMEBUFFER_BYTES / 4 {
            return Err(format!(
                "the visible {w}x{h} rectangle is larger than a framebuffer can be ({} MiB)",
                MAX_FRAMEBUFFER_BYTES >> 20
            ));
        }
        if x + w > u64::from(info.fd_width)
            || y + h > u64::from(info.fd_height)
            || u64::from(info.fd_width) * 4 > u64::from(info.fd_stride)
        {
            return Err(format!(
                "rectangle {:?} does not fit a {}x{} buffer with stride {}",
                info.rect, info.fd_width, info.fd_height, info.fd_stride
            ));
        }
        let need = u64::from(info.fd_stride) * u64::from(info.fd_height);
        let have = fd_size(fd)?;
        if need == 0 || need > have {
            return Err(format!(
                "stride {} x height {} = {need} bytes, the buffer holds {have}",
                info.fd_stride, info.fd_height
            ));
        }
        let len = usize::try_from(need).map_err(|_| format!("{need} bytes cannot be mapped"))?;
        // SAFETY: a fresh read-only shared mapping of `len` bytes of a file we hold; the
        // result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(errno_text("mmap"));
        }
        Ok(Mapping { ptr, len })
    }

    /// Why the pixels cannot be read, when they cannot.
    pub fn unreadable(&self) -> Option<&str> {
        self.map.as_ref().err().map(String::as_str)
    }

    /// Whether DMA_BUF_IOCTL_SYNC brackets the reads (a real dmabuf).
    pub fn synced(&self) -> bool {
        self.sync
    }

    /// Reads a rectangle of the visible area (relative to the scanout rectangle, clipped to
    /// it) as tightly packed B8G8R8X8 pixels: `(x, y, width, height, pixels)`. `None` when
    /// the buffer is unreadable or the rectangle is empty after clipping.
    pub fn read(&self, rect: [u32; 4]) -> Option<([u32; 4], Vec<u8>)> {
        let map = self.map.as_ref().ok()?;
        let [sx, sy, sw, sh] = self.info.rect;
        let [x, y, w, h] = rect;
        if x >= sw || y >= sh {
            return None;
        }
        let w = w.min(sw - x);
        let h = h.min(sh - y);
        if w == 0 || h == 0 {
            return None;
        }
        if self.sync {
            let _ = sync_ioctl(&self.fd, SYNC_START | SYNC_READ);
        }
        let row = w as usize * 4;
        let mut out = vec![0u8; row * h as usize];
        let mut src_row = vec![0u8; row];
        // pread needs a File; a duplicate descriptor keeps `self.fd` owned here.
        let file = match map {
            Access::Pread => Some(std::fs::File::from(self.fd.try_clone().ok()?)),
            Access::Mapped(_) => None,
        };
        let stride = u64::from(self.info.fd_stride);
        for (r, dst) in out.chunks_exact_mut(row).enumerate() {
            let off = (u64::from(sy) + u64::from(y) + r as u64) * stride
                + (u64::from(sx) + u64::from(x)) * 4;
            let Ok(off) = usize::try_from(off) else {
                continue;
            };
            match map {
                Access::Mapped(m) => {
                    if let Some(src) = m.bytes().get(off..off + row) {
                        to_bgrx(self.format, src, dst);
                    }
                }
                Access::Pread => {
                    // A short read (the file shrank) leaves the rest of the row black.
                    src_row.fill(0);
                    if let Some(f) = &file {
                        let _ = pread_full(f, &mut src_row, off as u64);
                    }
                    to_bgrx(self.format, &src_row, dst);
                }
            }
        }
        if self.sync {
            let _ = sync_ioctl(&self.fd, SYNC_END | SYNC_READ);
        }
        Some(([x, y, w, h], out))
    }
}

/// Reads up to `buf.len()` bytes at `offset`; returns how many came (fewer at end of file).
fn pread_full(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// DMA_BUF_IOCTL_SYNC with `flags`; Err(errno) (ENOTTY for a memfd).
fn sync_ioctl(fd: &OwnedFd, flags: u64) -> Result<(), i32> {
    let arg: u64 = flags;
    // SAFETY: the ioctl reads one u64 (`struct dma_buf_sync`) from `arg`, which outlives it;
    // on a descriptor that is not a dmabuf it fails with ENOTTY and touches nothing.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), DMA_BUF_IOCTL_SYNC as _, &arg) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::FromRawFd;

    fn memfd(bytes: &[u8]) -> OwnedFd {
        // SAFETY: memfd_create with a valid name; checked below.
        let fd = unsafe { libc::memfd_create(c"t".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: fresh descriptor.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
        f.write_all(bytes).unwrap_or_else(|e| panic!("{e}"));
        OwnedFd::from(f)
    }

    fn info(modifier: Option<u64>) -> ScanoutInfo {
        ScanoutInfo {
            scanout_id: 0,
            rect: [1, 1, 2, 2],
            fd_width: 4,
            fd_height: 3,
            fd_stride: 20,
            fd_flags: 0,
            fd_drm_fourcc: fourcc(b"XB24"),
            modifier,
        }
    }

    #[test]
    fn dmabuf_read_xbgr_subrect_converts_and_skips_padding() {
        let bytes: Vec<u8> = (0..60u8).collect();
        let d = DmabufScanout::new(info(Some(MOD_LINEAR)), memfd(&bytes));
        assert_eq!(d.unreadable(), None);
        assert!(!d.synced(), "a memfd is not a dmabuf");
        let (rect, px) = d.read([1, 0, 5, 5]).unwrap_or_else(|| panic!("unreadable"));
        assert_eq!(rect, [1, 0, 1, 2]);
        // Pixel (2, 1) at 1*20 + 2*4 = 28: R,G,B,X = 28..32 -> B,G,R,X.
        assert_eq!(px, [30, 29, 28, 31, 50, 49, 48, 51]);
    }

    #[test]
    fn dmabuf_tiled_modifier_or_short_buffer_is_unreadable_with_reason() {
        let d = DmabufScanout::new(info(Some(0x0100_0000_0000_0001)), memfd(&[0; 60]));
        assert!(d.unreadable().is_some_and(|r| r.contains("not linear")));
        let d = DmabufScanout::new(info(None), memfd(&[0; 59]));
        assert!(d.unreadable().is_some_and(|r| r.contains("holds 59")));
        assert_eq!(d.read([0, 0, 1, 1]), None);
    }

    #[test]
    fn dmabuf_larger_than_a_framebuffer_is_unreadable_not_allocated() {
        // 20000x20000 visible over a sparse 1.6 GB memfd: reading it whole at the scanout
        // allocated 1.6 GB (a 65535-square one, 17 GB: the proxy aborted).
        let big = ScanoutInfo {
            rect: [0, 0, 20000, 20000],
            fd_width: 20000,
            fd_height: 20000,
            fd_stride: 80000,
            ..info(None)
        };
        let fd = memfd(&[]);
        let f = std::fs::File::from(fd.try_clone().unwrap_or_else(|e| panic!("{e}")));
        f.set_len(80000 * 20000).unwrap_or_else(|e| panic!("{e}"));
        let d = DmabufScanout::new(big, fd);
        assert!(
            d.unreadable()
                .is_some_and(|r| r.contains("larger than a framebuffer can be (512 MiB)")),
            "{:?}",
            d.unreadable()
        );
        assert_eq!(d.read([0, 0, 1, 1]), None);
        // The largest rectangle there is (its byte count is past 2^64).
        let max = ScanoutInfo {
            rect: [0, 0, u32::MAX, u32::MAX],
            ..big
        };
        let d = DmabufScanout::new(max, memfd(&[]));
        assert!(
            d.unreadable()
                .is_some_and(|r| r.contains("larger than a framebuffer"))
        );
    }

    #[test]
    fn dmabuf_memfd_truncated_by_backend_reads_short_without_sigbus() {
        let bytes: Vec<u8> = (0..60u8).collect();
        let fd = memfd(&bytes);
        let d = DmabufScanout::new(
            info(Some(MOD_LINEAR)),
            fd.try_clone().unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(d.unreadable(), None);
        // The backend shrinks its buffer to the first row only. A mapping would now fault on
        // the second row (SIGBUS); the proxy reads what is left and zero-fills the rest.
        std::fs::File::from(fd)
            .set_len(20)
            .unwrap_or_else(|e| panic!("{e}"));
        let (rect, px) = d.read([0, 0, 2, 2]).unwrap_or_else(|| panic!("unreadable"));
        assert_eq!(rect, [0, 0, 2, 2]);
        assert_eq!(px, [0; 16], "rows 1 and 2 are past the end of the file now");
    }
}
