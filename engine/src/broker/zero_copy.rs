//! Writing a response's [`Chunk`]s to a socket: bytes with the stream's async write, file
//! regions with `sendfile(2)` straight from the page cache (or the disk) to the socket.
//!
//! # Never waits for the socket on the executor's thread
//! [`write_chunks`] (and [`write_chunks_to_socket`], for the write half of a split stream)
//! puts the socket in non-blocking mode (glommio's stream copes: its writes are
//! `send(MSG_DONTWAIT)` and, when the socket is full, an io_uring poll for writability; its
//! reads likewise). `sendfile` then never sleeps on a full socket: it sends what fits and
//! fails with `EAGAIN` when nothing does. On `EAGAIN` the next small piece of the region
//! ([`SOCKET_FULL_PIECE_BYTES`]) is read with `pread` into a buffer reused for the whole
//! call and written with the stream's async write, which parks this task until the socket
//! has room while the executor runs other tasks; then `sendfile` resumes and takes whatever
//! room the reader freed. The piece is small because its write is only the way to wait:
//! with a reader slower than the disk, about 2% of the bytes go through the copy (measured
//! by `tests/zero_copy_fetch.rs`). Glommio's write returns only once the kernel has taken
//! every byte (no send stays in flight behind it), and the writer is flushed before every
//! `sendfile` in case it buffers, so the two paths never reorder bytes.
//!
//! A peer that has gone makes `sendfile` fail with `EPIPE`; the `SIGPIPE` it also raises is
//! ignored, as Rust's runtime sets it up for every binary and test harness.
//!
//! # What it does wait for
//! Reading the file. `sendfile` and `pread` both read synchronously: from the page cache for
//! buffered segment files (the common tail-of-log fetch), from the device for O_DIRECT
//! descriptors or cold data. Each `sendfile` call is capped at [`SENDFILE_BYTES_MAX`] and
//! followed by `glommio::yield_if_needed`, so one large region cannot hold the thread for
//! longer than one such read plus the task queue's time slice.
//!
//! # When it copies
//! - the socket is full (`EAGAIN`): one [`SOCKET_FULL_PIECE_BYTES`] piece, then back to
//!   `sendfile`;
//! - `sendfile` refuses the descriptor (`EINVAL`, `ENOSYS`, `EOPNOTSUPP`; procfs files, for
//!   one): the rest of that chunk, in pieces of up to [`COPY_PIECE_BYTES_MAX`];
//! - an O_DIRECT descriptor: the kernel only splices O_DIRECT files at
//!   [`DIRECT_IO_ALIGNMENT_BYTES`]-aligned offsets and lengths (measured on Linux 6.18: aligned
//!   regions go through, anything else is `EINVAL`), so the unaligned head and tail of the
//!   region (each under 4 KiB) are copied, through an aligned buffer and aligned reads, and
//!   the aligned middle goes through `sendfile`.
//!
//! # Bounds
//! One copy buffer of [`COPY_PIECE_BYTES_MAX`] per call, allocated only if a copy happens;
//! at most [`SENDFILE_BYTES_MAX`] per `sendfile` call. Nothing else is allocated per chunk.
//!
//! # Concurrency
//! One call per stream at a time (it takes `&mut`). The file chunks' descriptors are read
//! with positional calls only (`sendfile` with an explicit offset, `pread`), so their file
//! position is never used and other holders of the same descriptor are not disturbed.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use futures_lite::{AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use super::chunks::{Chunk, FileChunk};

/// Largest piece of a file region copied through user memory at once, and the size of the
/// one copy buffer (a multiple of [`DIRECT_IO_ALIGNMENT_BYTES`]).
pub const COPY_PIECE_BYTES_MAX: usize = 64 << 10;
/// Largest count handed to one `sendfile` call: bounds how long one call can read the file
/// before the task offers the executor to others.
pub const SENDFILE_BYTES_MAX: usize = 1 << 20;
/// The piece copied when `sendfile` finds the socket full (aligned for O_DIRECT).
pub const SOCKET_FULL_PIECE_BYTES: usize = 4096;
/// Alignment of offsets, lengths and buffer addresses for O_DIRECT descriptors: the device's
/// physical block size, a multiple of every logical block size up to it.
pub const DIRECT_IO_ALIGNMENT_BYTES: usize = 4096;

const COPY_BUFFER_PAGES: usize = COPY_PIECE_BYTES_MAX / DIRECT_IO_ALIGNMENT_BYTES;
const _: () = assert!(COPY_PIECE_BYTES_MAX.is_multiple_of(DIRECT_IO_ALIGNMENT_BYTES));
const _: () = assert!(SOCKET_FULL_PIECE_BYTES.is_multiple_of(DIRECT_IO_ALIGNMENT_BYTES));
const _: () = assert!(SOCKET_FULL_PIECE_BYTES <= COPY_PIECE_BYTES_MAX);

/// How many bytes of file chunks went each way. Bytes chunks are counted in neither.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendStats {
    /// File bytes sent with `sendfile`, never entering user memory.
    pub zero_copy_bytes: u64,
    /// File bytes read with `pread` and written with the stream's write.
    pub copied_bytes: u64,
}

/// Writes `chunks` in order to `stream` (see the module documentation) and returns the
/// number of bytes written, the sum of the chunks' lengths.
///
/// Leaves the socket in non-blocking mode. On error, an unknown prefix of the chunks has been
/// written, so the connection should be closed.
pub async fn write_chunks(stream: &mut TcpStream, chunks: &[Chunk]) -> io::Result<u64> {
    write_chunks_with_stats(stream, chunks).await?;
    Ok(chunks.iter().map(Chunk::len).sum())
}

/// [`write_chunks`], also saying how the file chunks' bytes went.
pub async fn write_chunks_with_stats(
    stream: &mut TcpStream,
    chunks: &[Chunk],
) -> io::Result<SendStats> {
    let socket_fd = stream.as_raw_fd();
    write_chunks_to_socket(stream, socket_fd, chunks).await
}

/// [`write_chunks_with_stats`] for a writer that is not the stream itself, such as the write
/// half of a glommio `TcpStream` split with `futures_lite::io::split` so a connection can
/// read requests while it writes responses.
///
/// `writer` must write to the socket `socket_fd` (a caller bug otherwise: bytes would go to
/// two sockets), and must not wait on the thread. It may buffer: it is flushed before every
/// `sendfile`, so its bytes always precede the file's. Must run on a glommio executor.
pub async fn write_chunks_to_socket<W: AsyncWrite + Unpin>(
    writer: &mut W,
    socket_fd: RawFd,
    chunks: &[Chunk],
) -> io::Result<SendStats> {
    set_nonblocking(socket_fd)?;
    let mut sender = Sender {
        writer,
        socket_fd,
        unflushed: false,
        copy_buffer: None,
        stats: SendStats::default(),
    };
    for chunk in chunks {
        match chunk {
            Chunk::Bytes(bytes) => sender.write(bytes).await?,
            Chunk::File(file) => sender.send_file_chunk(file).await?,
        }
    }
    sender.flush().await?;
    Ok(sender.stats)
}

/// The plain copying path: the chunks' bytes concatenated, file regions read with `pread`
/// (aligned reads for O_DIRECT descriptors). For tests, and for senders without a socket
/// descriptor.
pub fn chunks_to_vec(chunks: &[Chunk]) -> io::Result<Vec<u8>> {
    let total_bytes: u64 = chunks.iter().map(Chunk::len).sum();
    let total_bytes = usize::try_from(total_bytes)
        .map_err(|_| invalid_input(format!("{total_bytes} bytes do not fit in memory")))?;
    let mut out = Vec::with_capacity(total_bytes);
    let mut copy_buffer: Option<CopyBuffer> = None;
    for chunk in chunks {
        match chunk {
            Chunk::Bytes(bytes) => out.extend_from_slice(bytes),
            Chunk::File(file) => {
                let buffer = copy_buffer.get_or_insert_with(CopyBuffer::new);
                let region = Region::of(file)?;
                let mut position = file.position;
                while position < region.end {
                    let piece_end = region.copy_piece_end(position);
                    out.extend_from_slice(region.read_piece(buffer, position, piece_end)?);
                    position = piece_end;
                }
            }
        }
    }
    Ok(out)
}

/// One call's state: where bytes go and how they went.
struct Sender<'writer, W> {
    writer: &'writer mut W,
    socket_fd: RawFd,
    /// Bytes went to `writer` since its last flush.
    unflushed: bool,
    /// Allocated on the first copy, reused for the rest of the call.
    copy_buffer: Option<CopyBuffer>,
    stats: SendStats,
}

impl<W: AsyncWrite + Unpin> Sender<'_, W> {
    /// Parks this task until the socket has room; the executor runs others meanwhile.
    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes).await?;
        self.unflushed = true;
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.unflushed {
            self.writer.flush().await?;
            self.unflushed = false;
        }
        Ok(())
    }

    async fn send_file_chunk(&mut self, file: &FileChunk) -> io::Result<()> {
        let region = Region::of(file)?;
        let mut position = file.position;
        let mut sendfile_usable = true;
        while position < region.end {
            let mut piece_end = region.copy_piece_end(position);
            if sendfile_usable {
                let span_bytes = region.sendfile_span(position);
                if span_bytes == 0 {
                    // An unaligned head or tail of an O_DIRECT region: copy to the boundary.
                    piece_end = region
                        .end
                        .min(region.align_down(position) + region.alignment);
                } else {
                    self.flush().await?;
                    let count = span_bytes.min(SENDFILE_BYTES_MAX as u64) as usize;
                    match sendfile_once(self.socket_fd, region.fd, position, count)? {
                        Sendfile::Sent(sent) => {
                            position += sent;
                            self.stats.zero_copy_bytes += sent;
                            glommio::yield_if_needed().await;
                            continue;
                        }
                        Sendfile::SocketFull => {
                            // The write of this small piece is how the task waits for room;
                            // once there is some, sendfile takes over again.
                            piece_end = region
                                .end
                                .min(region.align_down(position) + SOCKET_FULL_PIECE_BYTES as u64);
                        }
                        Sendfile::Refused => sendfile_usable = false,
                        Sendfile::EndOfFile => return Err(region.short_file(position)),
                    }
                }
            }
            let buffer = self.copy_buffer.get_or_insert_with(CopyBuffer::new);
            let piece = region.read_piece(buffer, position, piece_end)?;
            self.writer.write_all(piece).await?;
            self.unflushed = true;
            self.stats.copied_bytes += piece_end - position;
            position = piece_end;
        }
        Ok(())
    }
}

/// A file chunk's descriptor and bounds, with the alignment its reads need.
struct Region {
    fd: RawFd,
    end: u64,
    /// 1 for ordinary descriptors, [`DIRECT_IO_ALIGNMENT_BYTES`] for O_DIRECT ones.
    alignment: u64,
}

impl Region {
    fn of(file: &FileChunk) -> io::Result<Region> {
        let fd = file.fd.as_raw_fd();
        let end = file
            .position
            .checked_add(file.len)
            .filter(|end| i64::try_from(*end).is_ok())
            .ok_or_else(|| {
                invalid_input(format!(
                    "file region of {} bytes at {} runs past the largest file offset",
                    file.len, file.position
                ))
            })?;
        // SAFETY: F_GETFL on a descriptor we hold open; no memory is passed.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let alignment = if flags & libc::O_DIRECT != 0 {
            DIRECT_IO_ALIGNMENT_BYTES as u64
        } else {
            1
        };
        Ok(Region { fd, end, alignment })
    }

    fn align_down(&self, position: u64) -> u64 {
        position - position % self.alignment
    }

    fn align_up(&self, position: u64) -> u64 {
        position.next_multiple_of(self.alignment)
    }

    /// Bytes from `position` that `sendfile` may take in one go: all that is left, or for
    /// O_DIRECT the aligned whole blocks (0 when `position` itself is unaligned).
    fn sendfile_span(&self, position: u64) -> u64 {
        if !position.is_multiple_of(self.alignment) {
            return 0;
        }
        self.align_down(self.end - position)
    }

    /// End of the largest piece from `position` that fits the copy buffer once aligned.
    fn copy_piece_end(&self, position: u64) -> u64 {
        self.end
            .min(self.align_down(position) + COPY_PIECE_BYTES_MAX as u64)
    }

    /// Reads `[position, piece_end)` (at most one copy buffer, see `copy_piece_end`) and
    /// returns it; for O_DIRECT reads the enclosing aligned blocks and returns the middle.
    fn read_piece<'buffer>(
        &self,
        buffer: &'buffer mut CopyBuffer,
        position: u64,
        piece_end: u64,
    ) -> io::Result<&'buffer [u8]> {
        let read_start = self.align_down(position);
        let read_end = self.align_up(piece_end);
        let bytes = buffer.as_mut_slice();
        assert!(
            read_start <= position
                && position < piece_end
                && (read_end - read_start) as usize <= bytes.len(),
            "a copy piece [{position}, {piece_end}) must fit the copy buffer once aligned"
        );
        let needed = (piece_end - read_start) as usize;
        let wanted = (read_end - read_start) as usize;
        let mut filled = 0usize;
        while filled < needed {
            // SAFETY: the pointer and length describe the unfilled part of `bytes`.
            let read = unsafe {
                libc::pread(
                    self.fd,
                    bytes[filled..wanted].as_mut_ptr().cast(),
                    wanted - filled,
                    (read_start + filled as u64) as libc::off_t,
                )
            };
            if read < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            if read == 0 {
                return Err(self.short_file(read_start + filled as u64));
            }
            filled += read as usize;
        }
        Ok(&bytes[(position - read_start) as usize..needed])
    }

    fn short_file(&self, position: u64) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "file ends at {position}, inside a region that runs to {}",
                self.end
            ),
        )
    }
}

enum Sendfile {
    Sent(u64),
    /// `EAGAIN`: the socket's send buffer is full.
    SocketFull,
    /// The kernel will not splice from this descriptor (or not at this offset/length).
    Refused,
    /// The file is shorter than the region.
    EndOfFile,
}

fn sendfile_once(
    socket_fd: RawFd,
    file_fd: RawFd,
    position: u64,
    count: usize,
) -> io::Result<Sendfile> {
    loop {
        // `Region::of` checked that every position of the region fits an off_t.
        let mut offset = position as libc::off_t;
        // SAFETY: `offset` is a valid off_t for the call to update; both descriptors are
        // open for the duration of the call.
        let sent = unsafe { libc::sendfile(socket_fd, file_fd, &mut offset, count) };
        if sent > 0 {
            return Ok(Sendfile::Sent(sent as u64));
        }
        if sent == 0 {
            return Ok(Sendfile::EndOfFile);
        }
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => Ok(Sendfile::SocketFull),
            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => Ok(Sendfile::Refused),
            _ => Err(error),
        };
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an open descriptor; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn invalid_input(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// One page of the copy buffer; the type's alignment makes the buffer O_DIRECT-ready.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct AlignedPage([u8; DIRECT_IO_ALIGNMENT_BYTES]);

const _: () = assert!(std::mem::align_of::<AlignedPage>() == DIRECT_IO_ALIGNMENT_BYTES);

/// [`COPY_PIECE_BYTES_MAX`] bytes aligned to [`DIRECT_IO_ALIGNMENT_BYTES`].
struct CopyBuffer {
    pages: Vec<AlignedPage>,
}

impl CopyBuffer {
    fn new() -> CopyBuffer {
        CopyBuffer {
            pages: vec![AlignedPage([0; DIRECT_IO_ALIGNMENT_BYTES]); COPY_BUFFER_PAGES],
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the pages are contiguous, initialised, padding-free byte arrays owned by
        // `self.pages`, borrowed mutably for the slice's lifetime.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.pages.as_mut_ptr().cast::<u8>(),
                self.pages.len() * DIRECT_IO_ALIGNMENT_BYTES,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::os::fd::OwnedFd;
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;

    fn patterned(len: usize) -> Vec<u8> {
        (0..len).map(|index| (index * 31 % 251) as u8).collect()
    }

    fn file_with(content: &[u8], direct: bool) -> Option<(tempfile::TempDir, Arc<OwnedFd>)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(content)
            .unwrap();
        let mut options = OpenOptions::new();
        options.read(true);
        if direct {
            options.custom_flags(libc::O_DIRECT);
        }
        match options.open(&path) {
            Ok(file) => Some((dir, Arc::new(OwnedFd::from(file)))),
            // A filesystem without O_DIRECT (tmpfs): nothing to test there.
            Err(error) if direct && error.raw_os_error() == Some(libc::EINVAL) => None,
            Err(error) => panic!("open {path:?}: {error}"),
        }
    }

    #[test]
    fn chunks_to_vec_reads_regions_of_buffered_and_direct_files() {
        let content = patterned(300_000);
        for direct in [false, true] {
            let Some((_dir, fd)) = file_with(&content, direct) else {
                continue;
            };
            let regions = [
                (0u64, 4096u64),
                (13, 1000),
                (5000, 200_000),
                (4095, 2),
                (299_999, 1),
            ];
            for (position, len) in regions {
                let chunks = [
                    Chunk::Bytes(Bytes::from_static(b"head")),
                    Chunk::File(FileChunk {
                        fd: Arc::clone(&fd),
                        position,
                        len,
                    }),
                    Chunk::Bytes(Bytes::from_static(b"tail")),
                ];
                let mut expected = b"head".to_vec();
                expected.extend_from_slice(&content[position as usize..(position + len) as usize]);
                expected.extend_from_slice(b"tail");
                assert_eq!(
                    chunks_to_vec(&chunks).unwrap(),
                    expected,
                    "direct {direct}, region {position}+{len}"
                );
            }
        }
    }

    #[test]
    fn chunks_to_vec_reports_a_region_past_the_end_of_the_file() {
        let content = patterned(10_000);
        let (_dir, fd) = file_with(&content, false).unwrap();
        let chunks = [Chunk::File(FileChunk {
            fd,
            position: 9_000,
            len: 2_000,
        })];
        let error = chunks_to_vec(&chunks).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn direct_regions_split_into_copied_ends_and_an_aligned_middle() {
        let region = Region {
            fd: -1,
            end: 20_000,
            alignment: 4096,
        };
        assert_eq!(region.sendfile_span(100), 0);
        assert_eq!(region.sendfile_span(4096), 12_288);
        assert_eq!(region.sendfile_span(16_384), 0);
        assert_eq!(region.copy_piece_end(100), 20_000);
        let long = Region {
            fd: -1,
            end: 1 << 20,
            alignment: 4096,
        };
        assert_eq!(long.copy_piece_end(100), COPY_PIECE_BYTES_MAX as u64);
        assert_eq!(
            long.copy_piece_end(4096),
            4096 + COPY_PIECE_BYTES_MAX as u64
        );
        let buffered = Region {
            fd: -1,
            end: 1 << 20,
            alignment: 1,
        };
        assert_eq!(buffered.sendfile_span(100), (1 << 20) - 100);
        assert_eq!(
            buffered.copy_piece_end(100),
            100 + COPY_PIECE_BYTES_MAX as u64
        );
    }
}
