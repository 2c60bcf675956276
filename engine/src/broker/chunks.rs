//! A response as it goes on the wire: encoded bytes interleaved with file regions.
//!
//! A fetch response carries record batches straight from segment files. Rather than copying
//! them into the response, the encoder emits `Chunk::Bytes` for everything it encodes and
//! `Chunk::File` for each run of batches, and the sender writes file chunks with `sendfile`,
//! so the batches never pass through user memory.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use bytes::Bytes;

/// A run of bytes in a file, held open by a descriptor that outlives the segment (a `dup` of
/// the segment's, shared by the segment's regions: `FileRegion::shared_fd`), so it stays
/// readable even if the segment is deleted or the owning core moves on. While it lives,
/// retention deletes the segment's file rather than recycling it, so its bytes never change.
/// `Send`: regions travel from the core that owns a partition to the core that owns the
/// connection.
#[derive(Clone, Debug)]
pub struct FileChunk {
    pub fd: Arc<OwnedFd>,
    pub position: u64,
    pub len: u64,
}

impl FileChunk {
    /// Reads the region's bytes with `pread` (for the copying path and for tests).
    pub fn read_to_vec(&self) -> std::io::Result<Vec<u8>> {
        let mut buffer = vec![0u8; self.len as usize];
        let mut filled = 0usize;
        while filled < buffer.len() {
            // SAFETY: the pointer and length describe the unfilled part of `buffer`.
            let read = unsafe {
                libc::pread(
                    self.fd.as_raw_fd(),
                    buffer[filled..].as_mut_ptr().cast(),
                    buffer.len() - filled,
                    (self.position + filled as u64) as libc::off_t,
                )
            };
            if read < 0 {
                let error = std::io::Error::last_os_error();
                if error.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            if read == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            filled += read as usize;
        }
        Ok(buffer)
    }
}

/// One piece of an outgoing response.
#[derive(Clone, Debug)]
pub enum Chunk {
    Bytes(Bytes),
    File(FileChunk),
}

impl Chunk {
    pub fn len(&self) -> u64 {
        match self {
            Chunk::Bytes(bytes) => bytes.len() as u64,
            Chunk::File(file) => file.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The records of one partition in a fetch response: nothing, or pieces in order.
#[derive(Clone, Debug, Default)]
pub struct Records {
    pub parts: Vec<Chunk>,
}

impl Records {
    pub fn len(&self) -> u64 {
        self.parts.iter().map(Chunk::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
