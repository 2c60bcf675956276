//! Replaying an internal topic's partition (`__consumer_offsets`, `__share_group_state`):
//! every record of the log, oldest first, handed to the caller's state.
//!
//! Bounded: the log is read `STEP_BYTES` at a time, and a batch that decompresses beyond
//! `DECOMPRESSED_BYTES_MAX` is skipped. Records that do not decode are skipped and counted,
//! so one bad record cannot make a whole partition's state unavailable.

use crate::batch::{self, Record};
use crate::{LogError, PartitionLog};

/// Read step of a replay; bounds the memory a load takes besides the state it builds.
const STEP_BYTES: u64 = 4 << 20;
/// Largest decompressed batch a replay accepts (the brokers write these batches uncompressed).
const DECOMPRESSED_BYTES_MAX: usize = 64 << 20;

/// Calls `apply(record, its offset)` for every record of `log`, skipping control batches.
/// `apply` returns false for a record it could not read. Returns how many records were
/// skipped (unreadable to `apply`, or in a batch that did not decode). `what` names the
/// records in log lines.
pub async fn replay_records(
    log: &PartitionLog,
    what: &str,
    mut apply: impl FnMut(&Record, i64) -> bool,
) -> Result<u64, LogError> {
    let mut skipped = 0u64;
    let end = log.log_end_offset();
    let mut next = log.log_start_offset();
    while next < end {
        let regions = log.read(next, STEP_BYTES).await?;
        if regions.is_empty() {
            break;
        }
        let before = next;
        for region in regions {
            let bytes = region.read_bytes().await?;
            for item in batch::batches(&bytes, usize::MAX) {
                let (position, header) = item?;
                next = header.last_offset() + 1;
                if header.is_control() {
                    continue;
                }
                let stored = &bytes[position..position + header.total_bytes()];
                let records = match batch::decode_records(stored, DECOMPRESSED_BYTES_MAX) {
                    Ok(records) => records,
                    Err(error) => {
                        tracing::warn!(base_offset = header.base_offset, %error, "undecodable {what} batch skipped");
                        skipped += u64::from(header.records_count.max(0) as u32);
                        continue;
                    }
                };
                for record in &records {
                    let offset = header.base_offset + i64::from(record.offset_delta);
                    if !apply(record, offset) {
                        skipped += 1;
                    }
                }
            }
        }
        if next <= before {
            break;
        }
    }
    Ok(skipped)
}
