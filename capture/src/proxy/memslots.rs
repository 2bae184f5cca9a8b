//! VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS in proxy mode: ADD_MEM_REG and REM_MEM_REG keep
//! the proxy's own view of guest memory up to date (each region mapped like SET_MEM_TABLE's),
//! the shadow-ring region reaches the backend as one more ADD_MEM_REG that the proxy sends
//! itself (before QEMU's first region), and GET_MAX_MEM_SLOTS tells QEMU one slot fewer than
//! the backend has (the shadow region uses it).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use super::rings::{ProxyState, Region, SHADOW_SIZE};

/// Payload size of ADD_MEM_REG / REM_MEM_REG (`VhostUserMemRegMsg`: u64 padding, region).
pub const MEM_REG_LEN: usize = 40;

/// Parses the region of an ADD_MEM_REG / REM_MEM_REG payload.
pub fn parse_region(payload: &[u8]) -> Option<Region> {
    if payload.len() < MEM_REG_LEN {
        return None;
    }
    let u = |at: usize| {
        payload
            .get(at..at + 8)
            .and_then(|s| s.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    Some(Region {
        gpa: u(8),
        size: u(16),
        uaddr: u(24),
        mmap_offset: u(32),
    })
}

/// The ADD_MEM_REG payload for `r`.
pub fn region_payload(r: &Region) -> Vec<u8> {
    let mut p = vec![0u8; 8];
    for v in [r.gpa, r.size, r.uaddr, r.mmap_offset] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    p
}

fn overlaps(a: &Region, gpa: u64, uaddr: u64, size: u64) -> bool {
    let gpa_hit = gpa < a.gpa.saturating_add(a.size) && a.gpa < gpa.saturating_add(size);
    let ua_hit = uaddr < a.uaddr.saturating_add(a.size) && a.uaddr < uaddr.saturating_add(size);
    gpa_hit || ua_hit
}

impl ProxyState {
    /// ADD_MEM_REG: maps the region into the proxy's view of guest memory. The region must
    /// not overlap the shadow region (in guest-physical or front-end virtual addresses).
    pub fn add_region(&mut self, r: Region, fd: &OwnedFd) -> Result<(), String> {
        if overlaps(&r, self.shadow_gpa, self.shadow_uaddr, SHADOW_SIZE) {
            return Err(format!(
                "region at guest-physical {:#x} (+{:#x}), front-end address {:#x} overlaps the shadow rings at {:#x} / {:#x}",
                r.gpa, r.size, r.uaddr, self.shadow_gpa, self.shadow_uaddr
            ));
        }
        let file = super::rings::region_file(fd, &r)?;
        let size = usize::try_from(r.size).map_err(|_| "region too large".to_owned())?;
        let region = GuestRegionMmap::from_range(
            GuestAddress(r.gpa),
            size,
            Some(FileOffset::new(file, r.mmap_offset)),
        )
        .map_err(|e| format!("cannot map the region at {:#x}: {e}", r.gpa))?;
        let guest = match &self.guest {
            Some(g) => g.insert_region(Arc::new(region)),
            None => GuestMemoryMmap::from_regions(vec![region]),
        }
        .map_err(|e| format!("cannot add the region at {:#x}: {e}", r.gpa))?;
        self.guest = Some(Arc::new(guest));
        self.regions.push(r);
        Ok(())
    }

    /// REM_MEM_REG: unmaps the region (matched by guest-physical address and size, as the
    /// back-end matches it).
    pub fn remove_region(&mut self, r: Region) -> Result<(), String> {
        let Some(at) = self
            .regions
            .iter()
            .position(|x| x.gpa == r.gpa && x.size == r.size)
        else {
            return Err(format!(
                "no region at guest-physical {:#x} of {:#x} bytes",
                r.gpa, r.size
            ));
        };
        self.regions.remove(at);
        self.guest = match &self.guest {
            Some(g) if !self.regions.is_empty() => Some(
                g.remove_region(GuestAddress(r.gpa), r.size)
                    .map_err(|e| format!("cannot remove the region at {:#x}: {e}", r.gpa))?
                    .0
                    .into(),
            ),
            _ => None,
        };
        Ok(())
    }

    /// The shadow region as the backend must see it (for the proxy's own ADD_MEM_REG).
    pub fn shadow_region(&self) -> Region {
        Region {
            gpa: self.shadow_gpa,
            size: SHADOW_SIZE,
            uaddr: self.shadow_uaddr,
            mmap_offset: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::fd::FromRawFd;
    use vm_memory::Bytes;

    fn memfd(size: u64) -> OwnedFd {
        // SAFETY: memfd_create with a valid name; checked below.
        let fd = unsafe { libc::memfd_create(c"t".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: fresh descriptor.
        let f = unsafe { File::from_raw_fd(fd) };
        f.set_len(size).unwrap_or_else(|e| panic!("{e}"));
        OwnedFd::from(f)
    }

    #[test]
    fn mem_reg_add_two_then_remove_one_keeps_the_other_readable() {
        let rec = Arc::new(crate::recorder::Recorder::new(Box::new(
            crate::sink::NullSink::default(),
        )));
        let mut st = ProxyState::new(rec).unwrap_or_else(|e| panic!("{e}"));
        let (fa, fb) = (memfd(0x2000), memfd(0x1000));
        let a = Region {
            gpa: 0,
            size: 0x2000,
            uaddr: 0x7000_0000,
            mmap_offset: 0,
        };
        let b = Region {
            gpa: 0x10_0000,
            size: 0x1000,
            uaddr: 0x7100_0000,
            mmap_offset: 0,
        };
        st.add_region(a, &fa).unwrap_or_else(|e| panic!("{e}"));
        st.add_region(b, &fb).unwrap_or_else(|e| panic!("{e}"));
        let g = st.guest.clone().unwrap_or_else(|| panic!("no memory"));
        g.write_slice(&[7, 8], GuestAddress(0x10_0010))
            .unwrap_or_else(|e| panic!("{e}"));
        st.remove_region(a).unwrap_or_else(|e| panic!("{e}"));
        let g = st.guest.clone().unwrap_or_else(|| panic!("no memory"));
        let mut two = [0u8; 2];
        g.read_slice(&mut two, GuestAddress(0x10_0010))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(two, [7, 8]);
        assert!(g.read_slice(&mut two, GuestAddress(0x10)).is_err());
        assert!(st.remove_region(a).is_err());
        let clash = Region {
            gpa: st.shadow_gpa,
            ..b
        };
        assert!(
            st.add_region(clash, &fb)
                .is_err_and(|e| e.contains("overlaps"))
        );
        assert_eq!(
            parse_region(&region_payload(&st.shadow_region())),
            Some(st.shadow_region())
        );
    }
}
