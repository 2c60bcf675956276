//! The read-ahead of catch-up fetches (`broker::read_ahead`): what it serves is exactly the
//! region's bytes in the file, it reads each byte once for a reader that reads on, it keeps to
//! its memory budget and gives all of it back, and readers at different places do not undo
//! each other's windows.

// The storage crate's test helpers (places on each strategy, batches to append).
#[path = "../storage/tests/common/mod.rs"]
mod common;

use bytes::Bytes;
use common::{make_batch, place, run};
use shardlog::broker::read_ahead::{PartitionKey, ReadAhead};
use shardlog::segment::FileRegion;
use shardlog::{LogConfig, PartitionLog, StrategyKind};

/// Batches of 40 records of 1 KB: about 41 KB each, so regions end at unaligned positions.
const BATCHES: usize = 120;
/// Windows and fetch sizes small enough that a few MiB of log spans many of each.
const WINDOW_BYTES: u64 = 256 << 10;
const FETCH_BYTES: u64 = 150 << 10;

fn key(partition: i32) -> PartitionKey {
    ("orders".to_string(), partition)
}

/// A log of [`BATCHES`] batches in sealed segments of 1 MiB, on `kind`.
async fn filled_log(kind: StrategyKind) -> (common::Place, PartitionLog) {
    let place = place(kind);
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..LogConfig::default()
    };
    let log = place.open(config, "open").await;
    for seed in 0..BATCHES as u64 {
        let batch = make_batch(40, 1000, 1_700_000_000_000, seed);
        log.append(&batch, 0).await.expect("append");
    }
    // Sealed, so every byte is in its file: a reader's windows are then all read ahead
    // (at the open end of a log, a fetch makes the log write out what it holds first).
    log.roll_now().await.expect("roll");
    (place, log)
}

/// The region holding `offset`, at most `max_bytes` (the first one the log returns).
async fn region_at(log: &PartitionLog, offset: i64, max_bytes: u64) -> Option<FileRegion> {
    log.read(offset, max_bytes)
        .await
        .expect("read")
        .into_iter()
        .next()
}

/// The region's bytes through `read_ahead`, which must have room for them; checked against
/// the file.
async fn read_fitting(read_ahead: &ReadAhead, partition: i32, region: &FileRegion) -> Vec<u8> {
    let parts = read_ahead
        .read(&key(partition), region)
        .await
        .expect("read ahead")
        .expect("within the budget");
    let served = joined(&parts);
    let expected = region.read_bytes().await.expect("file bytes");
    assert!(served == expected, "region at {} differs", region.position);
    served
}

fn joined(parts: &[Bytes]) -> Vec<u8> {
    parts.iter().flat_map(|part| part.iter().copied()).collect()
}

/// The offset after the last batch of `bytes` (whole batches).
fn next_offset(bytes: &[u8]) -> i64 {
    let mut next = -1;
    for item in shardlog::batch::batches(bytes, usize::MAX) {
        let (_, header) = item.expect("whole, valid batches");
        next = header.last_offset() + 1;
    }
    next
}

/// Reads the whole log through `read_ahead` as one reader, checking each region against the
/// file; returns the regions' total bytes.
async fn read_through(log: &PartitionLog, read_ahead: &ReadAhead, partition: i32) -> u64 {
    let mut offset = 0;
    let mut total = 0;
    while let Some(region) = region_at(log, offset, FETCH_BYTES).await {
        let served = read_fitting(read_ahead, partition, &region).await;
        // As the broker does: near a segment's end, start on the next one.
        read_ahead.read_on_past_file_end(&key(partition), &region, log);
        offset = next_offset(&served);
        total += region.len;
    }
    assert_eq!(offset, log.log_end_offset());
    total
}

/// Waits until reads still in flight (ahead of a reader that stopped) have finished.
async fn settle() {
    glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
}

#[test]
fn a_reader_gets_the_file_bytes_and_each_byte_is_read_once() {
    for kind in [StrategyKind::Direct, StrategyKind::Uring, StrategyKind::Sim] {
        run(async move {
            let (_place, log) = filled_log(kind).await;
            let read_ahead = ReadAhead::new(WINDOW_BYTES, 64 << 20);
            let total = read_through(&log, &read_ahead, 0).await;
            let stats = read_ahead.stats();
            assert!(
                stats.window_bytes >= total && stats.window_bytes <= total + WINDOW_BYTES * 5,
                "{kind:?}: {} bytes read for {total} served (a window ahead per segment at most)",
                stats.window_bytes
            );
            assert_eq!(
                stats.windows_ahead,
                stats.windows - 1,
                "{kind:?}: every window but the log's first is read ahead of its fetch, the \
                 first of each later segment too: {stats:?}"
            );
            assert_eq!(stats.over_budget, 0);
            settle().await;
            assert_eq!(
                read_ahead.available_bytes(),
                64 << 20,
                "{kind:?}: a reader at the end of every segment leaves no window behind"
            );
            log.close().await.expect("close");
        });
    }
}

#[test]
fn a_region_over_the_budget_is_left_to_the_caller() {
    run(async {
        let (_place, log) = filled_log(StrategyKind::Direct).await;
        let read_ahead = ReadAhead::new(WINDOW_BYTES, 100 << 10);
        let region = region_at(&log, 0, FETCH_BYTES).await.expect("a region");
        assert!(region.len > 100 << 10);
        let answer = read_ahead.read(&key(0), &region).await.expect("no error");
        assert!(answer.is_none());
        assert_eq!(read_ahead.stats().over_budget, 1);
        assert_eq!(read_ahead.available_bytes(), 100 << 10, "nothing taken");
        log.close().await.expect("close");
    });
}

#[test]
fn responses_hold_their_share_until_dropped() {
    run(async {
        let (_place, log) = filled_log(StrategyKind::Direct).await;
        let budget = 1 << 20;
        let read_ahead = ReadAhead::new(WINDOW_BYTES, budget);
        let region = region_at(&log, 0, FETCH_BYTES).await.expect("a region");
        let parts = read_ahead
            .read(&key(0), &region)
            .await
            .expect("read")
            .expect("fits");
        settle().await;
        read_ahead.forget(&key(0));
        let held = budget - read_ahead.available_bytes();
        assert!(
            held >= region.len && held <= WINDOW_BYTES,
            "the response keeps its window ({held} bytes held)"
        );
        drop(parts);
        assert_eq!(read_ahead.available_bytes(), budget);
        log.close().await.expect("close");
    });
}

#[test]
fn a_needed_window_drops_the_least_recently_used_stream() {
    run(async {
        let (_place_a, log_a) = filled_log(StrategyKind::Direct).await;
        let (_place_b, log_b) = filled_log(StrategyKind::Direct).await;
        // Room for a reader's window and the one ahead of it, not for a second reader's.
        let read_ahead = ReadAhead::new(WINDOW_BYTES, 3 * WINDOW_BYTES);
        let first = region_at(&log_a, 0, FETCH_BYTES).await.expect("region");
        drop(read_ahead.read(&key(0), &first).await.expect("read"));
        settle().await;
        let second = region_at(&log_b, 0, FETCH_BYTES).await.expect("region");
        // Fits only once the other stream is dropped.
        read_fitting(&read_ahead, 1, &second).await;
        assert_eq!(read_ahead.stats().over_budget, 0);
        log_a.close().await.expect("close");
        log_b.close().await.expect("close");
    });
}

#[test]
fn two_readers_at_different_places_keep_their_own_windows() {
    run(async {
        let (_place, log) = filled_log(StrategyKind::Direct).await;
        let read_ahead = ReadAhead::new(WINDOW_BYTES, 64 << 20);
        // A second reader starts in the middle of the first segment.
        let middle = region_at(&log, 0, 400 << 10).await.expect("region");
        let mut offsets = [0, next_offset(&middle.read_bytes().await.expect("bytes"))];
        let mut served = 0;
        for turn in 0.. {
            let reader = turn % 2;
            let Some(region) = region_at(&log, offsets[reader], FETCH_BYTES).await else {
                break;
            };
            let bytes = read_fitting(&read_ahead, 0, &region).await;
            offsets[reader] = next_offset(&bytes);
            served += region.len;
            if offsets[reader] == log.log_end_offset() {
                break;
            }
        }
        let stats = read_ahead.stats();
        assert!(
            stats.window_bytes <= served + 10 * WINDOW_BYTES,
            "readers alternating do not reread each other's windows: {} read, {served} served",
            stats.window_bytes
        );
        log.close().await.expect("close");
    });
}
