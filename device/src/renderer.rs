//! The renderer seam: what the device asks of a renderer, and the rutabaga_gfx 2D implementation.
//!
//! The device validates every guest-controlled value before it calls a renderer, and it owns
//! guest memory access: a renderer never sees a guest address, only byte slices the device has
//! already read (and reported). That keeps replay deterministic and lets another renderer
//! (virglrenderer later) slot in behind the same trait.

use std::io::IoSliceMut;
use std::sync::{Arc, Mutex, PoisonError};

use rutabaga_gfx::{
    RUTABAGA_BLOB_MEM_GUEST, RUTABAGA_PIPE_BIND_RENDER_TARGET, RUTABAGA_PIPE_TEXTURE_2D,
    ResourceCreate3D, ResourceCreateBlob, Rutabaga, RutabagaBuilder, RutabagaComponentType,
    RutabagaError, RutabagaFence, RutabagaFenceHandler, RutabagaIovec, Transfer3D,
};
use vgt_format::wire::{Format, Rect, ResponseType};

use crate::FenceInfo;

/// Why a renderer operation failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RendererError {
    /// The renderer does not implement the operation.
    #[error("{op} is not supported by the {renderer} renderer")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// The renderer's name.
        renderer: &'static str,
    },
    /// The operation was handed inconsistent arguments (a device bug, never guest input).
    #[error("{op}: {what}")]
    Invalid {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        what: &'static str,
    },
    /// rutabaga_gfx returned an error.
    #[error("rutabaga {op} failed")]
    Rutabaga {
        /// The operation.
        op: &'static str,
        /// rutabaga's error.
        #[source]
        source: RutabagaError,
    },
}

impl RendererError {
    /// The response code a guest gets when this error ends its command.
    pub fn response_type(&self) -> ResponseType {
        match self {
            RendererError::Rutabaga {
                source: RutabagaError::InvalidResourceId,
                ..
            } => ResponseType::ERR_INVALID_RESOURCE_ID,
            RendererError::Rutabaga {
                source: RutabagaError::InvalidContextId,
                ..
            } => ResponseType::ERR_INVALID_CONTEXT_ID,
            _ => ResponseType::ERR_UNSPEC,
        }
    }
}

/// One capability set as GET_CAPSET_INFO reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapsetDescriptor {
    /// Capset id.
    pub capset_id: u32,
    /// Highest version.
    pub max_version: u32,
    /// Largest size of its data.
    pub max_size: u32,
}

/// What the device needs from a renderer.
///
/// Resource ids, rectangles and lengths are validated by the device before a call; an `Err`
/// here is answered to the guest with [`RendererError::response_type`].
pub trait Renderer: Send {
    /// Short name for messages.
    fn name(&self) -> &'static str;

    /// Whether 3D commands (contexts, 3D resources, SUBMIT_3D) are available. Decides whether
    /// the device offers `VIRTIO_GPU_F_VIRGL`.
    fn supports_3d(&self) -> bool {
        false
    }

    /// Number of capability sets.
    fn num_capsets(&self) -> u32;

    /// Capability set `index` (< `num_capsets`).
    fn capset_info(&self, index: u32) -> Result<CapsetDescriptor, RendererError>;

    /// The data of capset `capset_id` at `version`.
    fn capset(&self, capset_id: u32, version: u32) -> Result<Vec<u8>, RendererError>;

    /// Creates a 2D resource (4 bytes per pixel).
    fn create_2d(
        &mut self,
        resource_id: u32,
        format: Format,
        width: u32,
        height: u32,
    ) -> Result<(), RendererError>;

    /// Creates a blob whose memory is guest memory (BLOB_MEM_GUEST). The device displays such
    /// blobs itself from guest memory; the renderer only has to know the id.
    fn create_guest_blob(
        &mut self,
        resource_id: u32,
        blob_flags: u32,
        size: u64,
    ) -> Result<(), RendererError>;

    /// Drops a resource.
    fn unref(&mut self, resource_id: u32) -> Result<(), RendererError>;

    /// Copies `rect` of a 2D resource from `backing`, virtio semantics: row `r` of the
    /// rectangle is `backing[offset + r * stride ..][.. rect.width * 4]`. The device has checked
    /// that every such row lies inside `backing` and the rectangle inside the resource.
    fn transfer_write_2d(
        &mut self,
        resource_id: u32,
        rect: Rect,
        backing: &[u8],
        offset: u64,
        stride: u32,
    ) -> Result<(), RendererError>;

    /// Reads `rect` of a 2D resource into `dst`, tightly packed (`dst.len()` is
    /// `rect.width * rect.height * 4`), in the resource's own byte order. On success every
    /// byte of `dst` is written: the device passes recycled buffers that still hold an
    /// earlier picture.
    fn transfer_read_2d(
        &mut self,
        resource_id: u32,
        rect: Rect,
        dst: &mut [u8],
    ) -> Result<(), RendererError>;

    /// Asks for `fence` to signal once all work submitted before it is done.
    fn create_fence(&mut self, fence: FenceInfo) -> Result<(), RendererError>;

    /// Appends the fences that signalled since the last call to `out`.
    fn take_signalled(&mut self, out: &mut Vec<FenceInfo>);
}

/// rutabaga_gfx's pure-Rust 2D renderer (no features, no system libraries).
///
/// Rutabaga2D executes everything synchronously, including fences (they signal inside
/// `create_fence`). It has no contexts, so a fence on a context ring (`FLAG_INFO_RING_IDX`) is
/// signalled here directly: all earlier work is already complete.
pub struct RutabagaRenderer {
    rutabaga: Rutabaga,
    signalled: Arc<Mutex<Vec<FenceInfo>>>,
    /// Zero bytes put in front of the backing when a transfer's offset is smaller than rutabaga
    /// expects (see `transfer_write_2d`).
    pad: Vec<u8>,
    /// Landing area for `transfer_read_2d` (rutabaga writes the rectangle at its x, y).
    scratch: Vec<u8>,
}

impl std::fmt::Debug for RutabagaRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RutabagaRenderer").finish_non_exhaustive()
    }
}

// SAFETY: `Rutabaga` is not `Send` only because its component and context trait objects carry
// no `Send` bound. `RutabagaRenderer::new` builds it with capset mask 0 and the Rutabaga2D
// default component, which registers exactly one component (Rutabaga2D: a fence handler that is
// an `Arc<dyn Fn + Send + Sync>`) and no context can ever be created (2D has none). Its
// resources hold plain `Vec<u8>` host memory and iovecs (which rutabaga marks `Send`); this
// renderer never leaves iovecs attached between calls. Nothing in it is tied to a thread (no
// GL context, no thread-local state), so moving it to another thread is sound. It is not
// `Sync` and needs `&mut self` for every operation.
unsafe impl Send for RutabagaRenderer {}

fn rutabaga_err(op: &'static str) -> impl FnOnce(RutabagaError) -> RendererError {
    move |source| RendererError::Rutabaga { op, source }
}

impl RutabagaRenderer {
    /// Builds rutabaga with the 2D component.
    pub fn new() -> Result<RutabagaRenderer, RendererError> {
        let signalled: Arc<Mutex<Vec<FenceInfo>>> = Arc::default();
        let sink = Arc::clone(&signalled);
        let handler = RutabagaFenceHandler::new(move |f: RutabagaFence| {
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(FenceInfo {
                    flags: f.flags,
                    fence_id: f.fence_id,
                    ctx_id: f.ctx_id,
                    ring_idx: f.ring_idx,
                });
        });
        let rutabaga = RutabagaBuilder::new(0, handler)
            .set_default_component(RutabagaComponentType::Rutabaga2D)
            .build()
            .map_err(rutabaga_err("build"))?;
        Ok(RutabagaRenderer {
            rutabaga,
            signalled,
            pad: Vec::new(),
            scratch: Vec::new(),
        })
    }
}

impl Renderer for RutabagaRenderer {
    fn name(&self) -> &'static str {
        "rutabaga-2d"
    }

    fn num_capsets(&self) -> u32 {
        self.rutabaga.get_num_capsets()
    }

    fn capset_info(&self, index: u32) -> Result<CapsetDescriptor, RendererError> {
        let (capset_id, max_version, max_size) = self
            .rutabaga
            .get_capset_info(index)
            .map_err(rutabaga_err("get_capset_info"))?;
        Ok(CapsetDescriptor {
            capset_id,
            max_version,
            max_size,
        })
    }

    fn capset(&self, capset_id: u32, version: u32) -> Result<Vec<u8>, RendererError> {
        self.rutabaga
            .get_capset(capset_id, version)
            .map_err(rutabaga_err("get_capset"))
    }

    fn create_2d(
        &mut self,
        resource_id: u32,
        format: Format,
        width: u32,
        height: u32,
    ) -> Result<(), RendererError> {
        let create = ResourceCreate3D {
            target: RUTABAGA_PIPE_TEXTURE_2D,
            format: format.0,
            bind: RUTABAGA_PIPE_BIND_RENDER_TARGET,
            width,
            height,
            depth: 1,
            array_size: 1,
            last_level: 0,
            nr_samples: 0,
            flags: 0,
        };
        self.rutabaga
            .resource_create_3d(resource_id, create)
            .map_err(rutabaga_err("resource_create_3d"))
    }

    fn create_guest_blob(
        &mut self,
        resource_id: u32,
        blob_flags: u32,
        size: u64,
    ) -> Result<(), RendererError> {
        let create = ResourceCreateBlob {
            blob_mem: RUTABAGA_BLOB_MEM_GUEST,
            blob_flags,
            blob_id: 0,
            size,
        };
        self.rutabaga
            .resource_create_blob(0, resource_id, create, None, None)
            .map_err(rutabaga_err("resource_create_blob"))
    }

    fn unref(&mut self, resource_id: u32) -> Result<(), RendererError> {
        self.rutabaga
            .unref_resource(resource_id)
            .map_err(rutabaga_err("unref_resource"))
    }

    fn transfer_write_2d(
        &mut self,
        resource_id: u32,
        rect: Rect,
        backing: &[u8],
        offset: u64,
        stride: u32,
    ) -> Result<(), RendererError> {
        const OP: &str = "transfer_write";
        if rect.width == 0 || rect.height == 0 {
            return Ok(());
        }
        // Rutabaga2D reads row r from `transfer.offset + (y + r) * stride + x * 4`, while virtio
        // (and QEMU) read it from `offset + r * stride`. Shift by `base`; when the guest's offset
        // is below `base` (legal, unusual), put `base - offset` zero bytes in front instead.
        let base = u64::from(rect.y) * u64::from(stride) + u64::from(rect.x) * 4;
        let (rutabaga_offset, pad_len) = match offset.checked_sub(base) {
            Some(o) => (o, 0usize),
            None => (
                0,
                usize::try_from(base - offset).map_err(|_| RendererError::Invalid {
                    op: OP,
                    what: "pad larger than the address space",
                })?,
            ),
        };
        if self.pad.len() < pad_len {
            // Rutabaga never reads the pad (every row it copies starts past it): a fresh zeroed
            // allocation leaves its pages untouched.
            self.pad = vec![0; pad_len];
        }
        let mut iovecs = Vec::with_capacity(2);
        if pad_len > 0 {
            iovecs.push(RutabagaIovec {
                base: self.pad.as_mut_ptr().cast(),
                len: pad_len,
            });
        }
        iovecs.push(RutabagaIovec {
            base: backing.as_ptr().cast_mut().cast(),
            len: backing.len(),
        });
        // SAFETY (of what rutabaga does with these pointers): both iovecs point into slices that
        // are borrowed for the whole of this call (`backing` by the caller, `self.pad` through
        // `&mut self`, not resized until we return) and are valid for `len` bytes. Rutabaga2D's
        // transfer_write only reads through them, and they are detached below on every path
        // before the borrows end, so rutabaga never holds a dangling pointer.
        self.rutabaga
            .attach_backing(resource_id, iovecs)
            .map_err(rutabaga_err("attach_backing"))?;
        let transfer = Transfer3D::new_2d(rect.x, rect.y, rect.width, rect.height, rutabaga_offset);
        let result = self
            .rutabaga
            .transfer_write(0, resource_id, transfer, None)
            .map_err(rutabaga_err(OP));
        let detached = self
            .rutabaga
            .detach_backing(resource_id)
            .map_err(rutabaga_err("detach_backing"));
        result.and(detached)
    }

    fn transfer_read_2d(
        &mut self,
        resource_id: u32,
        rect: Rect,
        dst: &mut [u8],
    ) -> Result<(), RendererError> {
        const OP: &str = "transfer_read";
        if rect.width == 0 || rect.height == 0 {
            return Ok(());
        }
        let row = u64::from(rect.width) * 4;
        let tight = row * u64::from(rect.height);
        if dst.len() as u64 != tight {
            return Err(RendererError::Invalid {
                op: OP,
                what: "destination is not width * height * 4 bytes",
            });
        }
        let mut transfer = Transfer3D::new_2d(rect.x, rect.y, rect.width, rect.height, 0);
        transfer.stride = rect.width * 4;
        // Rutabaga2D writes the rectangle at `y * stride + x * 4` of the destination. With
        // stride = width * 4 the rows stay contiguous, so the tight rectangle starts there.
        let start = u64::from(rect.y) * row + u64::from(rect.x) * 4;
        if start == 0 {
            return self
                .rutabaga
                .transfer_read(0, resource_id, transfer, Some(IoSliceMut::new(dst)))
                .map_err(rutabaga_err(OP));
        }
        let (start, end) = match (usize::try_from(start), usize::try_from(start + tight)) {
            (Ok(s), Ok(e)) => (s, e),
            _ => {
                return Err(RendererError::Invalid {
                    op: OP,
                    what: "rectangle beyond the address space",
                });
            }
        };
        if self.scratch.len() < end {
            self.scratch.resize(end, 0);
        }
        let scratch = self.scratch.get_mut(..end).ok_or(RendererError::Invalid {
            op: OP,
            what: "scratch too small",
        })?;
        self.rutabaga
            .transfer_read(0, resource_id, transfer, Some(IoSliceMut::new(scratch)))
            .map_err(rutabaga_err(OP))?;
        let src = self.scratch.get(start..end).ok_or(RendererError::Invalid {
            op: OP,
            what: "scratch too small",
        })?;
        dst.copy_from_slice(src);
        Ok(())
    }

    fn create_fence(&mut self, fence: FenceInfo) -> Result<(), RendererError> {
        if fence.flags & vgt_format::wire::FLAG_INFO_RING_IDX != 0 {
            // No contexts in 2D: the work before this fence is already done.
            self.signalled
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(fence);
            return Ok(());
        }
        self.rutabaga
            .create_fence(RutabagaFence {
                flags: fence.flags,
                fence_id: fence.fence_id,
                ctx_id: fence.ctx_id,
                ring_idx: fence.ring_idx,
            })
            .map_err(rutabaga_err("create_fence"))
    }

    fn take_signalled(&mut self, out: &mut Vec<FenceInfo>) {
        let mut signalled = self
            .signalled
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        out.append(&mut signalled);
    }
}
