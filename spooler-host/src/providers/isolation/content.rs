//! Message content shared with an isolated provider's process without going through a socket.
//!
//! Each child gets one anonymous memory file (`memfd_create` on Linux, an unlinked temporary
//! file elsewhere) at start, mapped shared in both processes. Before a call the host copies the
//! content into its mapping, once, and the child lends the provider a slice of its own mapping:
//! no socket write and read, no buffer on the child's side. The file grows (to the next power of
//! two) when a larger message comes; the child maps it again when a call names a length past
//! its mapping. Calls are one at a time, so the host never writes while the child reads.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

/// A shared mapping of the content file: writable on the host's side, read-only on the
/// child's.
pub struct SharedContent {
    file: File,
    map: *mut u8,
    length: usize,
    protection: libc::c_int,
}

// SAFETY: the mapping is owned by this value alone and used by one thread at a time (`&mut`
// to write, `&` to read); the pointer is valid until drop.
unsafe impl Send for SharedContent {}

const FIRST_SIZE: usize = 64 * 1024;

impl SharedContent {
    /// A new, empty content file (the host's side).
    pub fn create() -> io::Result<SharedContent> {
        let file = anonymous_file()?;
        file.set_len(FIRST_SIZE as u64)?;
        SharedContent::map(file, libc::PROT_READ | libc::PROT_WRITE)
    }

    /// Maps the content file the host handed over (the child's side), read-only.
    pub fn open(file: File) -> io::Result<SharedContent> {
        SharedContent::map(file, libc::PROT_READ)
    }

    /// The file, for the child to inherit.
    pub fn file(&self) -> &File {
        &self.file
    }

    fn map(file: File, protection: libc::c_int) -> io::Result<SharedContent> {
        let length = usize::try_from(file.metadata()?.len())
            .map_err(|_| io::Error::other("the content file is too large to map"))?;
        let map = map_shared(&file, length, protection)?;
        Ok(SharedContent {
            file,
            map,
            length,
            protection,
        })
    }

    /// Copies `content` to the start of the mapping, growing the file first if it is too
    /// small (the host's side).
    pub fn write(&mut self, content: &[u8]) -> io::Result<()> {
        if content.len() > self.length {
            let length = content.len().next_power_of_two();
            self.file.set_len(length as u64)?;
            self.remap(length)?;
        }
        // SAFETY: the mapping is `self.length` bytes, at least `content.len()`, and no one
        // else writes it.
        unsafe { std::ptr::copy_nonoverlapping(content.as_ptr(), self.map, content.len()) };
        Ok(())
    }

    /// The first `length` bytes, mapping the file again if the host has grown it (the
    /// child's side).
    pub fn read(&mut self, length: usize) -> io::Result<&[u8]> {
        if length > self.length {
            let grown = usize::try_from(self.file.metadata()?.len()).unwrap_or(0);
            if grown < length {
                return Err(io::Error::other(format!(
                    "the content file has {grown} bytes, the call names {length}"
                )));
            }
            self.remap(grown)?;
        }
        // SAFETY: the mapping is valid for `self.length >= length` bytes until it is remapped,
        // which needs `&mut self`.
        Ok(unsafe { std::slice::from_raw_parts(self.map, length) })
    }

    fn remap(&mut self, length: usize) -> io::Result<()> {
        let map = map_shared(&self.file, length, self.protection)?;
        // SAFETY: the old mapping is ours and nothing borrows it (`&mut self`).
        unsafe { libc::munmap(self.map.cast(), self.length) };
        self.map = map;
        self.length = length;
        Ok(())
    }
}

impl Drop for SharedContent {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and nothing borrows it any more.
        unsafe { libc::munmap(self.map.cast(), self.length) };
    }
}

fn map_shared(file: &File, length: usize, protection: libc::c_int) -> io::Result<*mut u8> {
    // SAFETY: a fresh shared mapping of a file we hold open; the kernel picks the address.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            length.max(1),
            protection,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(map.cast())
}

/// A memory file that can grow but never shrink (sealed): a child that truncated it would make
/// the host's next write into its mapping fault.
#[cfg(target_os = "linux")]
fn anonymous_file() -> io::Result<File> {
    // SAFETY: the name is a NUL-terminated string; the result is checked.
    let fd = unsafe {
        libc::memfd_create(
            c"spooler-content".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a file descriptor just created and owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd) };
    // SAFETY: fcntl on the descriptor just made.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

#[cfg(not(target_os = "linux"))]
fn anonymous_file() -> io::Result<File> {
    let path = std::env::temp_dir().join(format!(
        "spooler-content-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_reads_what_the_host_wrote_even_after_growth() {
        let mut host = SharedContent::create().unwrap();
        let mut child = SharedContent::open(host.file().try_clone().unwrap()).unwrap();
        host.write(b"small").unwrap();
        assert_eq!(child.read(5).unwrap(), b"small");
        let large = vec![7u8; FIRST_SIZE * 3 + 1];
        host.write(&large).unwrap();
        assert_eq!(child.read(large.len()).unwrap(), &large[..]);
        assert!(child.read(FIRST_SIZE * 100).is_err());
        #[cfg(target_os = "linux")]
        assert!(
            child.file.set_len(0).is_err(),
            "the child cannot shrink the file under the host's mapping"
        );
    }
}
