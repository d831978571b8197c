//! Reading a region of a file that may be truncated under us, through a memory map.
//!
//! A page of a mapping that lies past the file's end after a truncation (copytruncate rotation does
//! exactly that) raises SIGBUS on access, which by default kills the process. We install a SIGBUS
//! handler once; for a fault inside a region registered here, it maps an anonymous zero page over the
//! faulting page (so the access completes, reading zeros) and raises a flag. After copying out of the
//! map, the caller checks the flag: if it was raised, what was copied since is discarded and the file
//! is re-examined. Faults anywhere else get the default action (the process dies as it would have).

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

use memmap2::{Mmap, MmapOptions};

/// Regions currently mapped for reading: (start, len) pairs; 0 len = free slot.
const SLOTS: usize = 8;
static REGION_START: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static REGION_LEN: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static FAULTED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    for i in 0..SLOTS {
        let start = REGION_START[i].load(Ordering::SeqCst);
        let len = REGION_LEN[i].load(Ordering::SeqCst);
        if len != 0 && addr >= start && addr < start + len {
            let page = addr & !(page_size() - 1);
            // SAFETY: the page lies inside a mapping we own (registered above) and is replaced by a
            // private anonymous page of zeros; nothing else refers to it. mmap is a plain syscall here.
            unsafe {
                libc::mmap(
                    page as *mut libc::c_void,
                    page_size(),
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                );
            }
            FAULTED.store(true, Ordering::SeqCst);
            return;
        }
    }
    // Not ours: restore the default action and let the fault happen again, killing the process as it
    // would have without us.
    // SAFETY: signal() with SIG_DFL is async-signal-safe.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

fn install_handler() {
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction with our handler and SA_SIGINFO is a valid argument.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
        }
    });
}

/// A read-only view of `len` bytes of a file from `offset`, safe against truncation.
pub struct Region {
    map: Mmap,
    skip: usize,
    slot: usize,
}

impl Region {
    /// Maps `[offset, offset + len)` of `file`. `len` must be > 0.
    pub fn map(file: &File, offset: u64, len: usize) -> io::Result<Region> {
        install_handler();
        let page = page_size() as u64;
        let aligned = offset - offset % page;
        let skip = (offset - aligned) as usize;
        // SAFETY: the file may be truncated or modified by other processes while mapped. Reads past a
        // truncated end raise SIGBUS, which our handler turns into zero pages plus a flag that
        // `Region::copy_valid` checks; modified bytes are just data (we copy them, never trust them).
        let map = unsafe {
            MmapOptions::new()
                .offset(aligned)
                .len(skip + len)
                .map(file)?
        };
        let slot = (0..SLOTS)
            .find(|&i| {
                REGION_LEN[i]
                    .compare_exchange(0, usize::MAX, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            })
            .ok_or_else(|| io::Error::other("too many regions mapped at once"))?;
        REGION_START[slot].store(map.as_ptr() as usize, Ordering::SeqCst);
        REGION_LEN[slot].store(map.len(), Ordering::SeqCst);
        Ok(Region { map, skip, slot })
    }

    /// The mapped bytes. Reading them may observe zeros if the file was truncated; call
    /// [`Region::truncated`] after copying out to know.
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.skip..]
    }

    /// Clears the truncation flag before a copy.
    pub fn begin_copy(&self) {
        FAULTED.store(false, Ordering::SeqCst);
    }

    /// Whether a page of this (or any) region faulted since [`Region::begin_copy`]: the file shrank
    /// under us and what was copied may hold zeros instead of data.
    pub fn truncated(&self) -> bool {
        FAULTED.load(Ordering::SeqCst)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        REGION_LEN[self.slot].store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn truncating_a_mapped_file_raises_the_flag_instead_of_killing_us() {
        let dir = std::env::temp_dir().join(format!("shipper-map-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![b'a'; 3 * 4096 + 100]).unwrap();
        let r = File::open(&path).unwrap();
        let region = Region::map(&r, 10, 3 * 4096).unwrap();
        region.begin_copy();
        assert_eq!(region.bytes()[5000], b'a');
        assert!(!region.truncated());
        f.set_len(100).unwrap();
        region.begin_copy();
        let copied: Vec<u8> = region.bytes().to_vec();
        assert!(region.truncated());
        assert_eq!(copied[..90].iter().filter(|&&b| b == b'a').count(), 90);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
