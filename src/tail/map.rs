//! Reading a region of a file that may be truncated under us, through a memory map.
//!
//! A page of a mapping that lies past the file's end after a truncation (copytruncate rotation does
//! exactly that) raises SIGBUS on access, which by default kills the process; so does a page the disk
//! cannot read (EIO). We install a SIGBUS handler once, for the life of the process. For a fault the
//! kernel raised (`si_code > 0`) inside a region registered here, it maps an anonymous zero page over the
//! faulting page — the access then completes, reading zeros — and raises a flag. Callers copy lines out
//! of the map into batches and check the flag after each copy: once it is up, the last record copied is
//! taken back and the file is re-examined (shorter: truncated; same size: a bad page, reported). So zeros
//! from a vanished page are never shipped. A SIGBUS sent by another process (`kill -BUS`, `si_code <= 0`)
//! is ignored. A real fault anywhere else gets the default action: the process dies as it would have.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

use memmap2::{Mmap, MmapOptions};

/// Regions currently mapped for reading: (start, len) pairs; 0 len = free slot.
const SLOTS: usize = 8;
static REGION_START: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static REGION_LEN: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
/// Per slot: a page of that region faulted.
static REGION_FAULTED: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];
/// The page size, read once before the handler is installed: `sysconf` is not async-signal-safe.
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code <= 0 {
        // Sent by a process (kill, sigqueue, tgkill), not raised by a fault: nothing to repair, and
        // returning resumes whatever was running. The handler stays installed.
        return;
    }
    let page_size = PAGE.load(Ordering::Relaxed);
    for i in 0..SLOTS {
        let start = REGION_START[i].load(Ordering::SeqCst);
        let len = REGION_LEN[i].load(Ordering::SeqCst);
        if len != 0 && len != usize::MAX && addr >= start && addr < start + len {
            let page = addr & !(page_size - 1);
            // SAFETY: the page lies inside a read-only mapping this process made and registered above;
            // MAP_FIXED replaces it with a private anonymous page of zeros, which nothing else refers
            // to. mmap is a plain system call (async-signal-safe in practice on Linux). If it fails, the
            // faulting access is retried on the old page and faults again: restore the default action
            // so that the process dies instead of looping.
            let r = unsafe {
                libc::mmap(
                    page as *mut libc::c_void,
                    page_size,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if r == libc::MAP_FAILED {
                // SAFETY: signal() with SIG_DFL is async-signal-safe.
                unsafe {
                    libc::signal(sig, libc::SIG_DFL);
                }
                return;
            }
            REGION_FAULTED[i].store(true, Ordering::SeqCst);
            return;
        }
    }
    // A real fault outside our maps: restore the default action and let the access fault again,
    // killing the process as it would have without us.
    // SAFETY: signal() with SIG_DFL is async-signal-safe.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// Installs the handler once; an error if the system refused (then nothing is mapped).
fn install_handler() -> io::Result<()> {
    let r = INSTALLED.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            PAGE.store(p as usize, Ordering::Relaxed);
        }
        // SAFETY: a zeroed sigaction with our handler, SA_SIGINFO and an empty mask is a valid
        // argument; the handler only touches atomics and makes system calls.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error().to_string());
            }
        }
        Ok(())
    });
    r.clone()
        .map_err(|e| io::Error::other(format!("cannot install the SIGBUS handler: {e}")))
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
        install_handler()?;
        let page = PAGE.load(Ordering::Relaxed) as u64;
        let aligned = offset - offset % page;
        let skip = (offset - aligned) as usize;
        let slot = (0..SLOTS)
            .find(|&i| {
                REGION_LEN[i]
                    .compare_exchange(0, usize::MAX, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            })
            .ok_or_else(|| io::Error::other("too many regions mapped at once"))?;
        // SAFETY: the file may be truncated or modified by other processes while mapped. Reads past a
        // truncated end (or of a page the disk cannot read) raise SIGBUS, which our handler turns into a
        // zero page plus the flag that `Region::faulted` reports; callers check it after every copy
        // and drop what they copied since. Modified bytes are just data: they are copied, never
        // trusted as structure.
        let map = unsafe { MmapOptions::new().offset(aligned).len(skip + len).map(file) };
        let map = match map {
            Ok(m) => m,
            Err(e) => {
                REGION_LEN[slot].store(0, Ordering::SeqCst);
                return Err(e);
            }
        };
        REGION_FAULTED[slot].store(false, Ordering::SeqCst);
        REGION_START[slot].store(map.as_ptr() as usize, Ordering::SeqCst);
        REGION_LEN[slot].store(map.len(), Ordering::SeqCst);
        Ok(Region { map, skip, slot })
    }

    /// The mapped bytes. Reading them may observe zeros if the file shrank; check
    /// [`Region::faulted`] after copying anything out.
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.skip..]
    }

    /// Whether a page of this region faulted (the file shrank under us, or the disk failed) since it
    /// was mapped: what was copied since may hold zeros instead of data.
    pub fn faulted(&self) -> bool {
        // The handler runs on the faulting thread, synchronously within the access: a SeqCst load
        // after the copy cannot be reordered before it.
        REGION_FAULTED[self.slot].load(Ordering::SeqCst)
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

    fn scratch(name: &str) -> std::path::PathBuf {
        crate::testkit::scratch_dir(&format!("map-{name}"))
    }

    #[test]
    fn truncating_a_mapped_file_raises_the_flag_instead_of_killing_us() {
        let dir = scratch("trunc");
        let path = dir.join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![b'a'; 3 * 4096 + 100]).unwrap();
        let r = File::open(&path).unwrap();
        let region = Region::map(&r, 10, 3 * 4096).unwrap();
        assert_eq!(region.bytes()[5000], b'a');
        assert!(!region.faulted());
        f.set_len(100).unwrap();
        let copied: Vec<u8> = region.bytes().to_vec();
        assert!(region.faulted());
        assert_eq!(copied[..90].iter().filter(|&&b| b == b'a').count(), 90);
        drop(region);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stray_sigbus_from_another_process_is_ignored_and_the_guard_stays() {
        let dir = scratch("stray");
        let path = dir.join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![b'b'; 2 * 4096]).unwrap();
        let r = File::open(&path).unwrap();
        let region = Region::map(&r, 0, 2 * 4096).unwrap();
        // SAFETY: sending ourselves a signal whose handler is installed.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGBUS);
        }
        assert!(!region.faulted(), "a sent signal is not a fault");
        f.set_len(10).unwrap();
        let copied: Vec<u8> = region.bytes().to_vec();
        assert!(
            region.faulted(),
            "the guard still works after a stray signal"
        );
        assert_eq!(&copied[..10], &[b'b'; 10]);
        drop(region);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
