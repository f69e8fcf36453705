//! The table's file as loaded: a shared read-only mapping of it or, where mapping fails, a
//! copy read into memory. The table keeps it to compare each entry with its record when it
//! stores, so that only changed records are written.

use crate::store::fs::FsError;
use std::path::Path;
use std::ptr::NonNull;

/// The table's file as loaded: mapped (shared, read-only) or, where mapping fails, read.
///
/// A prolog is a new process: reading the file would fault in every page of a fresh buffer
/// before a record is parsed. Mapping the file hands it the page cache's own pages,
/// populated up front with `MADV_POPULATE_READ`, so a read error is an error here and not a
/// SIGBUS later. The mapping is shared, so the records [`LeaseTable::store`] writes in place
/// show in it at once. Writers (under the node lock) never shrink the file: they write
/// records in place or rename a new file over it, which leaves the mapped one intact.
///
/// [`LeaseTable::store`]: super::LeaseTable::store
pub(super) enum Image {
    Mapped { addr: NonNull<u8>, len: usize },
    Owned(Vec<u8>),
}

impl Image {
    /// The file's bytes, `None` when it does not exist.
    pub(super) fn read(path: &Path) -> Result<Option<Image>, FsError> {
        use std::os::fd::AsRawFd;
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(FsError::Io {
                    op: "open",
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let len = f.metadata().map_or(0, |m| m.len() as usize);
        if len > 0 {
            // SAFETY: a new read-only mapping of `len` bytes of an open file at an address
            // the kernel picks; nothing refers to it until it is checked below
            let addr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    f.as_raw_fd(),
                    0,
                )
            };
            if addr != libc::MAP_FAILED {
                // SAFETY: `addr` is the mapping just made, `len` bytes long
                let populated = unsafe { libc::madvise(addr, len, libc::MADV_POPULATE_READ) };
                if populated == 0 {
                    let addr = NonNull::new(addr.cast::<u8>()).expect("mmap");
                    return Ok(Some(Image::Mapped { addr, len }));
                }
                // SAFETY: the mapping just made, not handed out: unmapped here, once
                unsafe { libc::munmap(addr, len) };
            }
        }
        // not mappable (an empty file, an old kernel, a read error): read it, which names
        // the error if there is one
        read_if_exists(path).map(|b| b.map(Image::Owned))
    }
}

impl std::ops::Deref for Image {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            // SAFETY: mapped and populated for `len` bytes until drop
            Image::Mapped { addr, len } => unsafe {
                std::slice::from_raw_parts(addr.as_ptr(), *len)
            },
            Image::Owned(v) => v,
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if let Image::Mapped { addr, len } = *self {
            // SAFETY: the mapping made in `Image::read`, unmapped once
            unsafe { libc::munmap(addr.as_ptr().cast(), len) };
        }
    }
}

impl Clone for Image {
    fn clone(&self) -> Image {
        Image::Owned(self.to_vec())
    }
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "Image({} bytes)", self.len())
    }
}

/// The file's bytes, `None` when it does not exist.
pub(super) fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, FsError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FsError::Io {
            op: "read",
            path: path.to_owned(),
            source,
        }),
    }
}
