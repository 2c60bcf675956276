//! Small files and directory entries on the storage seam: index files, checkpoints, markers,
//! and the renames and removals of segment files.
//!
//! A segment's bytes travel through a [`FileIo`](super::FileIo) engine. The files around it
//! are small, but writing one ends in two fsyncs, and the file system's metadata operations
//! (an unlink that frees a segment's extents, a rename, a directory fsync) can take
//! milliseconds. On an executor's thread they would stall every partition of the core, so
//! code on an executor uses the async operations below:
//!
//! | operation | what it does | when it resolves `Ok`, a crash afterwards finds |
//! |-----------|--------------|------------------------------------------------|
//! | [`write_file_atomic_off_thread`](Storage::write_file_atomic_off_thread) | writes `<name>.tmp`, fdatasyncs it, renames it over the file, fsyncs the directory | the file holding exactly the new bytes |
//! | [`read_file_off_thread`](Storage::read_file_off_thread) | reads at most `max_bytes` of a file (`None` if absent) | (nothing written) |
//! | [`rename_off_thread`](Storage::rename_off_thread) | renames, replacing any file at the target, fsyncs the directory | the file under its new name only |
//! | [`remove_off_thread`](Storage::remove_off_thread) | unlinks (a missing file is not an error) | the file gone once its directory is next fsynced; possibly back before that |
//! | [`sync_dir_off_thread`](Storage::sync_dir_off_thread) | fsyncs a directory | every name created, renamed or removed in it before the call |
//! | [`remove_dir_all_off_thread`](Storage::remove_dir_all_off_thread) | removes a directory and its files | gone once the parent directory is next fsynced |
//! | [`list_off_thread`](Storage::list_off_thread), [`create_dir_all_off_thread`](Storage::create_dir_all_off_thread) | lists a directory's files; creates a directory and its parents | (a new directory's name is not fsynced) |
//!
//! **Errors.** After a failed write the file holds its old bytes or, if only the directory
//! fsync failed, the new ones until a crash may bring the old ones back: never a mix, never
//! a torn file. The temporary copy is removed when the write or fdatasync fails (a full disk
//! gets its space back). After a failed rename the file is under one of its two names.
//!
//! **Where they run.** On the real strategies, on the calling executor's blocking-thread
//! pool (glommio's `spawn_blocking`), while the executor goes on with its other tasks: they
//! must be called on a glommio executor. On `sim`, through the simulated disk, one step at a
//! time with other tasks running between the steps, so its faults reach the caller: a failed
//! or stalled fdatasync or directory fsync, a full disk, and a crash that loses a rename
//! whose directory was not yet synced (see `SimDisk::write_file_atomic`).
//!
//! **Concurrency.** Any task of the core may call any of them at once, but two writes of the
//! same file must not overlap (they share the temporary file); its owner serialises them.
//! Dropping a future does not stop a system call already handed to the pool: the operation
//! then finishes unobserved, and is still all or nothing.
//!
//! **Bounds.** Reads take at most `max_bytes`. A written file is held in memory whole, so
//! callers keep these files small (an index file is 16 bytes per 4 KiB of log).
//!
//! The blocking forms ([`write_file_atomic`](Storage::write_file_atomic),
//! [`read_file`](Storage::read_file), [`remove`](Storage::remove), [`list`](Storage::list),
//! [`create_dir_all`](Storage::create_dir_all)) are for code that runs before the executors
//! start, and for tests.

use std::path::{Path, PathBuf};

use super::Storage;
use crate::error::StorageError;

/// The temporary file a write of `path` goes through: `<name>.tmp` beside it. The log's
/// recovery removes files ending in `.tmp`; each file has its own, so writing a segment's
/// `.index` and `.timeindex` never share one.
pub(crate) fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

impl Storage {
    /// Replaces a small file atomically and durably (see the module documentation for the
    /// contract): write a temporary file, fdatasync it, rename it over `path`, fsync the
    /// directory. Resolves `Ok` once a crash would find `path` holding exactly `bytes`.
    pub async fn write_file_atomic_off_thread(
        &self,
        path: &Path,
        bytes: Vec<u8>,
    ) -> Result<(), StorageError> {
        if let Storage::Sim(disk) = self {
            return disk.write_file_atomic(path, bytes).await;
        }
        let path = path.to_path_buf();
        glommio::executor()
            .spawn_blocking(move || write_file_atomic(&path, &bytes))
            .await
    }

    /// Reads a whole small file, at most `max_bytes` of it, or `None` if it does not exist.
    pub async fn read_file_off_thread(
        &self,
        path: &Path,
        max_bytes: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        if let Storage::Sim(disk) = self {
            futures_lite::future::yield_now().await;
            return Ok(disk.read_whole(path, max_bytes));
        }
        let path = path.to_path_buf();
        glommio::executor()
            .spawn_blocking(move || read_file(&path, max_bytes))
            .await
    }

    /// Renames a file, replacing any file at `to`, and fsyncs the directory: resolves `Ok`
    /// once a crash would find the file under its new name. (A file's fdatasync does not make
    /// its directory entry durable; see "Recycled segments" in docs/storage.md for why that
    /// matters when a recycled file becomes a segment.)
    pub async fn rename_off_thread(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        if let Storage::Sim(disk) = self {
            return disk.rename_durably(from, to).await;
        }
        let (from, to) = (from.to_path_buf(), to.to_path_buf());
        glommio::executor()
            .spawn_blocking(move || {
                std::fs::rename(&from, &to)
                    .map_err(|error| StorageError::io("rename", &from, error))?;
                match to.parent() {
                    Some(dir) => sync_dir(dir),
                    None => Ok(()),
                }
            })
            .await
    }

    /// Removes a file; a file that is already gone is not an error. The removal is durable
    /// once the directory is next fsynced (the simulated disk makes it durable at once).
    pub async fn remove_off_thread(&self, path: &Path) -> Result<(), StorageError> {
        if let Storage::Sim(disk) = self {
            futures_lite::future::yield_now().await;
            disk.remove(path);
            return Ok(());
        }
        let path = path.to_path_buf();
        glommio::executor()
            .spawn_blocking(move || remove(&path))
            .await
    }

    /// Makes the entries of `dir` durable (an fsync of the directory): a new file's
    /// fdatasync does not make its name durable. On the simulated disk it is what makes a new
    /// file's name, or a small file's rename, survive a crash, and it can be failed or
    /// stalled there.
    pub async fn sync_dir_off_thread(&self, dir: &Path) -> Result<(), StorageError> {
        if let Storage::Sim(disk) = self {
            return disk.sync_dir(dir).await;
        }
        let dir = dir.to_path_buf();
        glommio::executor()
            .spawn_blocking(move || sync_dir(&dir))
            .await
    }

    /// The names of the files directly inside `dir`, sorted.
    pub async fn list_off_thread(&self, dir: &Path) -> Result<Vec<String>, StorageError> {
        if let Storage::Sim(_) = self {
            return self.list(dir);
        }
        let dir = dir.to_path_buf();
        glommio::executor().spawn_blocking(move || list(&dir)).await
    }

    /// Creates a directory and its parents (nothing to do on the simulated disk).
    pub async fn create_dir_all_off_thread(&self, dir: &Path) -> Result<(), StorageError> {
        if let Storage::Sim(_) = self {
            return Ok(());
        }
        let dir = dir.to_path_buf();
        glommio::executor()
            .spawn_blocking(move || create_dir_all(&dir))
            .await
    }

    /// Removes a directory and everything in it (a deleted partition's); a directory that is
    /// already gone is not an error. Durable once the parent directory is next fsynced. The
    /// simulated disk's directories hold files only, so there it removes the files in `dir`.
    pub async fn remove_dir_all_off_thread(&self, dir: &Path) -> Result<(), StorageError> {
        if let Storage::Sim(disk) = self {
            futures_lite::future::yield_now().await;
            for name in disk.list(dir) {
                disk.remove(&dir.join(name));
            }
            return Ok(());
        }
        let dir = dir.to_path_buf();
        glommio::executor()
            .spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(error) => Err(StorageError::io("remove directory", &dir, error)),
            })
            .await
    }

    /// [`write_file_atomic_off_thread`](Self::write_file_atomic_off_thread), blocking the
    /// calling thread on the real strategies: for code that runs before the executors start.
    /// On the simulated disk the file is replaced durably at once.
    pub fn write_file_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
        if let Storage::Sim(disk) = self {
            return disk.write_whole(path, bytes);
        }
        write_file_atomic(path, bytes)
    }

    /// [`read_file_off_thread`](Self::read_file_off_thread), blocking on the real strategies.
    pub fn read_file(&self, path: &Path, max_bytes: u64) -> Result<Option<Vec<u8>>, StorageError> {
        if let Storage::Sim(disk) = self {
            return Ok(disk.read_whole(path, max_bytes));
        }
        read_file(path, max_bytes)
    }

    /// [`remove_off_thread`](Self::remove_off_thread), blocking on the real strategies.
    pub fn remove(&self, path: &Path) -> Result<(), StorageError> {
        if let Storage::Sim(disk) = self {
            disk.remove(path);
            return Ok(());
        }
        remove(path)
    }

    /// [`list_off_thread`](Self::list_off_thread), blocking on the real strategies.
    pub fn list(&self, dir: &Path) -> Result<Vec<String>, StorageError> {
        let mut names = match self {
            Storage::Sim(disk) => disk.list(dir),
            _ => list(dir)?,
        };
        names.sort();
        Ok(names)
    }

    /// [`create_dir_all_off_thread`](Self::create_dir_all_off_thread), blocking on the real
    /// strategies.
    pub fn create_dir_all(&self, dir: &Path) -> Result<(), StorageError> {
        match self {
            Storage::Sim(_) => Ok(()),
            _ => create_dir_all(dir),
        }
    }
}

/// Write a temporary file beside `path`, fdatasync it, rename it over `path`, fsync the
/// directory: after a crash, `path` holds either its old bytes or all of `bytes`.
fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    use std::io::Write;
    let temporary = temporary_path(path);
    let mut file = std::fs::File::create(&temporary)
        .map_err(|error| StorageError::io("create", &temporary, error))?;
    let written = file
        .write_all(bytes)
        .map_err(|error| StorageError::io("write", &temporary, error))
        .and_then(|()| {
            file.sync_data()
                .map_err(|error| StorageError::io("fdatasync", &temporary, error))
        });
    if let Err(error) = written {
        // `path` is untouched; give back the space the partial copy took (a full disk).
        drop(file);
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    std::fs::rename(&temporary, path).map_err(|error| StorageError::io("rename", path, error))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// fsyncs a directory, making the creation, removal and renaming of its entries durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let dir_file =
        std::fs::File::open(dir).map_err(|error| StorageError::io("open", dir, error))?;
    dir_file
        .sync_all()
        .map_err(|error| StorageError::io("fsync", dir, error))
}

fn read_file(path: &Path, max_bytes: u64) -> Result<Option<Vec<u8>>, StorageError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StorageError::io("open", path, error)),
    };
    let mut bytes = Vec::new();
    file.take(max_bytes)
        .read_to_end(&mut bytes)
        .map_err(|error| StorageError::io("read", path, error))?;
    Ok(Some(bytes))
}

fn remove(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StorageError::io("unlink", path, error)),
    }
}

fn list(dir: &Path) -> Result<Vec<String>, StorageError> {
    let entries =
        std::fs::read_dir(dir).map_err(|error| StorageError::io("readdir", dir, error))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| StorageError::io("readdir", dir, error))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

fn create_dir_all(dir: &Path) -> Result<(), StorageError> {
    std::fs::create_dir_all(dir).map_err(|error| StorageError::io("mkdir", dir, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_file_has_its_own_temporary_file() {
        assert_eq!(
            temporary_path(Path::new("/p/00000000000000000000.index")),
            Path::new("/p/00000000000000000000.index.tmp")
        );
        assert_ne!(
            temporary_path(Path::new("/p/00000000000000000000.index")),
            temporary_path(Path::new("/p/00000000000000000000.timeindex"))
        );
    }
}
