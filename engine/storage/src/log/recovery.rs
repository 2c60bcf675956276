//! Opening a log: finding its segments and making them consistent after a crash.
//!
//! A roll seals (fsyncs, trims, writes the indexes of) the old segment in the background, and
//! nothing in the new segment counts as durable until the old one is durable to its end and
//! the new file's name is durable. So a non-last segment may lack its trim and index files,
//! but never a batch that a later segment's acknowledged batches follow. Recovery:
//! 1. lists `<base>.log` files in offset order; a gap in the chain cuts the log before it;
//! 2. for each sealed segment, loads its index files if they pass their checks, and walks
//!    the batches after the last index entry to find the segment's end; a missing or damaged
//!    index is rebuilt by walking the whole segment;
//! 3. walks the active segment whole (unless the log was closed cleanly, which left the
//!    indexes written), checking every batch's CRC and that offsets follow on;
//! 4. cuts the log at the first batch that fails, durably, and drops any later segments;
//!    except that a segment whose batches end exactly at the next segment's base offset is
//!    whole, and what follows its last batch is space a background seal had not trimmed yet
//!    (see `log::seal`): it is trimmed without loss;
//! 5. keeps the spare files (`<end offset>.spare`, see `log::spares`) a new segment may
//!    still recycle, and deletes the others. They are never read as log.
//!
//! Only bytes that were never acknowledged as durable can be in a torn tail, so step 4 loses
//! nothing acknowledged; a failure inside a sealed segment is media corruption, and cutting
//! there keeps the log a valid prefix (the report says what was dropped).

use std::path::Path;
use std::rc::Rc;

use super::spares::{self, SparePool};
use super::{LogConfig, CLEAN_SHUTDOWN_FILE};
use crate::error::LogError;
use crate::segment::{Segment, SegmentPaths};
use crate::storage::{AppendConfig, Storage};

/// A piece of log that recovery cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncatedTail {
    pub segment_base_offset: i64,
    /// Where the segment now ends.
    pub valid_bytes: u64,
    pub dropped_bytes: u64,
    /// What the walk found there.
    pub reason: String,
}

/// What recovery found and did. Kept on the log for logging and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The previous close was clean (its marker was present).
    pub clean_shutdown: bool,
    pub segments_opened: usize,
    /// Segments whose indexes were rebuilt by a full walk.
    pub indexes_rebuilt: usize,
    pub truncated: Vec<TruncatedTail>,
    /// Whole segments dropped because an earlier one was cut or the chain had a gap.
    pub segments_dropped: usize,
    /// Bytes after the last batch that start with zeros: preallocated space or the padding of
    /// an aligned write. Trimmed (and space preallocated again) without loss.
    pub zero_tail_bytes: u64,
    /// Bytes after the last batch that start with a whole batch from an older segment: the
    /// old contents of a recycled file (see `log::spares`). Trimmed without loss.
    pub recycled_tail_bytes: u64,
    /// Spare files kept for recycling, and spare files deleted (unusable, or over the bound).
    pub spares_kept: usize,
    pub spares_deleted: usize,
}

pub(super) async fn recover(
    storage: &Storage,
    dir: &Path,
    config: &LogConfig,
    append_config: &AppendConfig,
) -> Result<(Vec<Rc<Segment>>, SparePool, RecoveryReport), LogError> {
    storage.create_dir_all_off_thread(dir).await?;
    let names = storage.list_off_thread(dir).await?;
    let mut report = RecoveryReport {
        clean_shutdown: names.iter().any(|name| name == CLEAN_SHUTDOWN_FILE),
        ..RecoveryReport::default()
    };
    // From now on a crash is unclean again.
    storage
        .remove_off_thread(&dir.join(CLEAN_SHUTDOWN_FILE))
        .await?;
    for name in names.iter().filter(|name| name.ends_with(".tmp")) {
        storage.remove_off_thread(&dir.join(name)).await?;
    }
    let bases: Vec<i64> = names
        .iter()
        .filter_map(|name| SegmentPaths::parse_log_name(name))
        .collect();

    let mut segments: Vec<Rc<Segment>> = Vec::new();
    for (position, &base_offset) in bases.iter().enumerate() {
        let is_last = position + 1 == bases.len();
        if let Some(previous) = segments.last() {
            if previous.next_offset() != base_offset {
                drop_segments(storage, dir, &bases[position..], &mut report).await?;
                // The previous segment was opened sealed and is the last one now: it must
                // take appends again. (A crash while a roll's background seal had not yet
                // made its end durable leaves exactly this: the old segment ends short of
                // the next one's base.)
                let len = previous.len();
                previous
                    .truncate_to(
                        storage,
                        len,
                        previous.next_offset(),
                        append_config,
                        config.index_interval_bytes,
                        config.max_batch_bytes,
                    )
                    .await?;
                break;
            }
        }
        let paths = SegmentPaths::new(dir, base_offset);
        let len = storage.file_len(&paths.log).await?.unwrap_or(0);
        let segment =
            Segment::open(storage, dir, base_offset, len, !is_last, append_config).await?;
        report.segments_opened += 1;
        let trusted =
            (report.clean_shutdown || !is_last) && segment.load_indexes(storage, len).await?;
        if !trusted {
            report.indexes_rebuilt += 1;
        }
        let outcome = segment
            .scan(config.max_batch_bytes, config.index_interval_bytes, trusted)
            .await?;
        let cut = outcome.valid_len < len;
        let recycled_tail = cut && outcome.stale_batch;
        let zero_tail =
            cut && !recycled_tail && is_zero_tail(&segment, outcome.valid_len, len).await?;
        // A roll creates the next segment at this one's end offset and seals (trims) this
        // one in the background, after making its batches durable. A crash before the trim
        // leaves the bytes past its last batch untouched: preallocated zeros, or a recycled
        // file's old contents behind the zero padding of the last aligned write. Batches
        // that end exactly where the next segment starts are the whole segment, whatever
        // follows them.
        let whole_before_next = cut
            && bases
                .get(position + 1)
                .is_some_and(|&next_base| next_base == segment.next_offset());
        let recycled_tail = recycled_tail || (whole_before_next && !zero_tail);
        let padding_only = zero_tail || recycled_tail;
        if zero_tail {
            // Preallocated space or an aligned write's padding, not lost data.
            report.zero_tail_bytes += len - outcome.valid_len;
        }
        if recycled_tail {
            // A recycled file's old batches, never part of this segment.
            report.recycled_tail_bytes += len - outcome.valid_len;
        }
        if cut && !padding_only {
            report.truncated.push(TruncatedTail {
                segment_base_offset: base_offset,
                valid_bytes: outcome.valid_len,
                dropped_bytes: len - outcome.valid_len,
                reason: outcome
                    .stopped_by
                    .unwrap_or_else(|| "walk ended early".to_string()),
            });
        }
        if cut {
            segment
                .truncate_to(
                    storage,
                    outcome.valid_len,
                    segment.next_offset(),
                    append_config,
                    config.index_interval_bytes,
                    config.max_batch_bytes,
                )
                .await?;
        }
        let becomes_last = cut && !padding_only;
        if !is_last && !becomes_last && (cut || !trusted) {
            // A sealed segment stays sealed: trimmed, with index files written.
            segment.seal(storage).await?;
        }
        segments.push(Rc::new(segment));
        if becomes_last && !is_last {
            drop_segments(storage, dir, &bases[position + 1..], &mut report).await?;
            break;
        }
    }
    if segments.is_empty() {
        segments.push(Rc::new(
            Segment::create(storage, dir, 0, append_config, None).await?,
        ));
    }
    let log_end_offset = segments.last().map_or(0, |segment| segment.next_offset());
    let (spares, spares_deleted) = SparePool::load(
        storage,
        dir,
        &names,
        log_end_offset,
        config.segment_bytes,
        spares::recycles(storage, config.recycle_segments),
    )
    .await?;
    report.spares_kept = spares.stats().spares;
    report.spares_deleted = spares_deleted;
    Ok((segments, spares, report))
}

/// Deletes the files of segments that can no longer be part of the log, newest first.
async fn drop_segments(
    storage: &Storage,
    dir: &Path,
    bases: &[i64],
    report: &mut RecoveryReport,
) -> Result<(), LogError> {
    for &base_offset in bases.iter().rev() {
        let paths = SegmentPaths::new(dir, base_offset);
        for path in [&paths.log, &paths.index, &paths.time_index] {
            storage.remove_off_thread(path).await?;
        }
        report.segments_dropped += 1;
    }
    Ok(())
}

/// Whether the log ends cleanly at `valid_len`: the next bytes (up to `ZERO_PROBE_BYTES`)
/// are zeros, as in preallocated space or an aligned write's padding. Bytes further on are
/// not read: nothing after the first invalid batch was ever acknowledged, so the tail is cut
/// either way; this only decides whether the report calls it a torn tail.
async fn is_zero_tail(segment: &Segment, valid_len: u64, len: u64) -> Result<bool, LogError> {
    const ZERO_PROBE_BYTES: u64 = 8 * 1024;
    let probe_bytes = (len - valid_len).min(ZERO_PROBE_BYTES) as usize;
    let tail = segment.file().read_at(valid_len, probe_bytes).await?;
    Ok(tail.iter().all(|&byte| byte == 0))
}
