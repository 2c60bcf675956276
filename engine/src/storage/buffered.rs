//! `buffered`: writes through the page cache with glommio's `BufferedFile` (Kafka's classic
//! design). Appends are cheap memory copies into the cache; durability comes only from
//! fdatasync, and reads of recent data hit the cache, which is what makes sendfile pay off.

use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{BufferedFile, OpenOptions};

use super::{FileIo, IoBuffer};
use crate::error::StorageError;

/// A segment file written through the page cache. See the module documentation.
pub struct BufferedIo {
    file: BufferedFile,
    path: PathBuf,
}

impl BufferedIo {
    /// Opens `path` for reading and writing, creating it if absent.
    pub async fn open(path: &Path) -> Result<Rc<Self>, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .buffered_open(path)
            .await
            .map_err(|error| StorageError::io("open", path, error.into()))?;
        Ok(Rc::new(BufferedIo {
            file,
            path: path.to_path_buf(),
        }))
    }

    fn error(&self, op: &'static str, error: glommio::GlommioError<()>) -> StorageError {
        StorageError::io(op, &self.path, error.into())
    }
}

impl IoBuffer for Vec<u8> {
    fn as_bytes(&self) -> &[u8] {
        self
    }

    fn as_bytes_mut(&mut self) -> &mut [u8] {
        self
    }

    fn truncate_to(&mut self, len: usize) {
        self.truncate(len);
    }
}

impl FileIo for BufferedIo {
    type Buffer = Vec<u8>;

    fn alignment(&self) -> u64 {
        1
    }

    fn alloc_buffer(&self, bytes: usize) -> Vec<u8> {
        vec![0; bytes]
    }

    fn write_at(
        self: &Rc<Self>,
        buffer: Vec<u8>,
        position: u64,
    ) -> impl Future<Output = Result<(), StorageError>> + 'static {
        let io = Rc::clone(self);
        async move {
            let expected = buffer.len();
            let written = io
                .file
                .write_at(buffer, position)
                .await
                .map_err(|error| io.error("write", error))?;
            // A regular file writes short only when the disk is full; treat it as the failure
            // it is rather than retrying into an unknown state.
            if written != expected {
                return Err(StorageError::io(
                    "short write",
                    &io.path,
                    std::io::Error::from(std::io::ErrorKind::WriteZero),
                ));
            }
            Ok(())
        }
    }

    fn sync(self: &Rc<Self>) -> impl Future<Output = Result<(), StorageError>> + 'static {
        let io = Rc::clone(self);
        async move {
            io.file
                .fdatasync()
                .await
                .map_err(|error| io.error("fdatasync", error))
        }
    }

    async fn read_at(&self, position: u64, bytes: usize) -> Result<Vec<u8>, StorageError> {
        let result = self
            .file
            .read_at(position, bytes)
            .await
            .map_err(|error| self.error("read", error))?;
        Ok(result.to_vec())
    }

    async fn set_len(&self, len: u64) -> Result<(), StorageError> {
        self.file
            .truncate(len)
            .await
            .map_err(|error| self.error("ftruncate", error))
    }

    async fn preallocate(&self, len: u64) -> Result<(), StorageError> {
        self.file
            .pre_allocate(len, true)
            .await
            .map_err(|error| self.error("fallocate", error))
    }

    async fn file_len(&self) -> Result<u64, StorageError> {
        self.file
            .file_size()
            .await
            .map_err(|error| self.error("stat", error))
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }
}
