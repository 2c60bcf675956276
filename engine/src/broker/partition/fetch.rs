//! Fetch on the partition's owner core, for consumers and followers: what may be read (up to
//! the high watermark, or the log end for a follower), from the tail cache, read ahead, or
//! `sendfile` of the segment file.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::{FetchError, FetchOutcome, Fetched, ReadFailure};
use crate::broker::chunks::{Chunk, FileChunk, Records};
use crate::broker::metadata::Topic;
use crate::broker::replication::{now_ms, Reader};
use crate::broker::shard::Shard;
use crate::cluster::leader;
use crate::error::LogError;

impl Shard {
    pub(in crate::broker) async fn fetch_here(
        self: &Rc<Self>,
        topic: &Arc<Topic>,
        partition: i32,
        offset: i64,
        max_bytes: u64,
        reader: Reader,
    ) -> FetchOutcome {
        let open = self.partition(topic, partition).await?;
        let log_end_offset = open.log.log_end_offset();
        let log_start_offset = open.log.log_start_offset();
        let served = leader::serve_fetch(
            &mut open.replica.borrow_mut(),
            reader.replica,
            reader.current_leader_epoch,
            offset,
            (log_start_offset, log_end_offset),
            now_ms(),
        );
        let plan = served?;
        if plan.watermark_moved {
            open.publish_progress();
        }
        // Followers wait on the log end; consumers on what every ISR member has.
        let waits_on = match reader.replica {
            Some(_) => &open.end_offset,
            None => &open.high_watermark,
        };
        let upper_offset = plan.upper_offset;
        if plan.out_of_range {
            tracing::info!(
                topic = %topic.name,
                partition,
                offset,
                log_start_offset,
                log_end_offset,
                "fetch offset out of range"
            );
            return Err(FetchError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
                high_watermark: plan.high_watermark,
            });
        }
        let mut fetched = Fetched {
            high_watermark: plan.high_watermark,
            log_start_offset,
            records: Records::default(),
            appended: Arc::clone(&open.appended),
            end_offset: Arc::clone(waits_on),
        };
        // A read that fails part way answers the error with the records read before it.
        let failed = |error: LogError, fetched: Fetched| -> FetchOutcome {
            Err(FetchError::Read(Box::new(ReadFailure {
                source: error,
                high_watermark: fetched.high_watermark,
                log_start_offset: fetched.log_start_offset,
                records: fetched.records,
            })))
        };
        if offset >= upper_offset {
            return Ok(fetched);
        }
        if let Some(tail) = &open.tail {
            if let Some(cached) = tail.borrow().read(offset, max_bytes.max(1), upper_offset) {
                if !cached.is_empty() {
                    fetched.records.parts = cached.into_iter().map(Chunk::Bytes).collect();
                    return Ok(fetched);
                }
            }
        }
        match open
            .log
            .read_below(offset, max_bytes.max(1), upper_offset)
            .await
        {
            Ok(regions) => {
                let key = (topic.name.to_string(), partition);
                for region in regions {
                    if open.tail.is_some() {
                        match self.read_ahead.read(&key, &region).await {
                            Ok(Some(parts)) => {
                                self.read_ahead
                                    .read_on_past_file_end(&key, &region, &open.log);
                                fetched
                                    .records
                                    .parts
                                    .extend(parts.into_iter().map(Chunk::Bytes));
                                continue;
                            }
                            Ok(None) => {} // Over the core's budget: from the file.
                            Err(error) => return failed(error.into(), fetched),
                        }
                    }
                    if let Some(fd) = region.raw_fd() {
                        advise_read_ahead(fd, region.position, region.len);
                    }
                    // The segment's own shared descriptor, not a fresh dup: while this
                    // chunk lives, retention deletes the file rather than recycling it.
                    match region.shared_fd() {
                        Some(Ok(fd)) => fetched.records.parts.push(Chunk::File(FileChunk {
                            fd,
                            position: region.position,
                            len: region.len,
                        })),
                        _ => match region.read_bytes().await {
                            Ok(bytes) => {
                                fetched.records.parts.push(Chunk::Bytes(Bytes::from(bytes)))
                            }
                            Err(error) => return failed(error, fetched),
                        },
                    }
                }
            }
            Err(error) => return failed(error, fetched),
        }
        Ok(fetched)
    }
}

/// Asks the kernel to start reading a region that is about to be sent, and the same length
/// after it (where a consumer reading on will ask next), into the page cache. Data written
/// with O_DIRECT is not cached, and `sendfile` alone reads it through the default readahead
/// window, a small request at a time; one advice for the whole region lets the device work
/// on all of it at once, while the previous region is still being sent. Advice only: a
/// failure changes nothing but speed.
fn advise_read_ahead(fd: std::os::fd::RawFd, position: u64, len: u64) {
    let (Ok(start), Ok(span)) = (
        libc::off_t::try_from(position),
        libc::off_t::try_from(len * 2),
    ) else {
        return;
    };
    // SAFETY: posix_fadvise only reads its integer arguments; a bad descriptor is an error.
    unsafe {
        libc::posix_fadvise(fd, start, span, libc::POSIX_FADV_WILLNEED);
    }
}
