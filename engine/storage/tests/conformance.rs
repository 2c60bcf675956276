//! The storage conformance suite: every scenario runs on every strategy (`direct`, `buffered`,
//! `uring`, `sim`). A strategy is done when it passes all of them.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use common::{as_stored, make_batch, place, read_all, run, split_batches};
use shardlog_storage::batch::{self, Compression};
use shardlog_storage::storage::CommitMode;
use shardlog_storage::{Durability, LogConfig, LogError, PartitionLog, StrategyKind};

/// Small chunks and segments so a few hundred kilobytes cross every boundary.
fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 * 1024,
        chunk_bytes: 16 * 1024,
        write_behind_max: 4,
        index_interval_bytes: 4096,
        ..LogConfig::default()
    }
}

/// Appends `batches` and returns them as stored (patched), in order.
async fn append_all(log: &PartitionLog, batches: Vec<Vec<u8>>, epoch: i32) -> Vec<Vec<u8>> {
    let mut stored = Vec::new();
    for batch in batches {
        let expected_base = log.log_end_offset();
        let info = log.append(&batch, epoch).await.expect("append");
        assert_eq!(info.base_offset, expected_base);
        stored.push(as_stored(batch, expected_base, epoch));
    }
    stored
}

/// Batches of 1 to 40 records with values of 1 to 3000 bytes: sizes straddle chunk edges.
fn varied_batches(count: usize, seed: u64) -> Vec<Vec<u8>> {
    (0..count)
        .map(|index| {
            let records = 1 + (index * 7 + seed as usize) % 40;
            let value_bytes = 1 + (index * 389 + seed as usize) % 3000;
            make_batch(
                records,
                value_bytes,
                1_000 + index as i64 * 100,
                seed + index as u64,
            )
        })
        .collect()
}

fn append_then_read_returns_the_same_bytes(kind: StrategyKind) {
    run(async move {
        let place = place(kind);
        let log = place.open(small_config(), "open").await;
        let stored = append_all(&log, varied_batches(60, 1), 5).await;
        assert!(log.segment_count() > 1, "the test must cross a roll");
        assert_eq!(read_all(&log, 0, 1 << 20).await, stored);
        // Also in small steps, which return exactly one batch each.
        assert_eq!(read_all(&log, 0, 1).await, stored);
        // Patched batches still pass the CRC: the patched fields lie outside it.
        for batch in &stored {
            batch::validate(batch, usize::MAX).expect("stored batch valid");
        }
    });
}

fn every_offset_reads_its_own_batch(kind: StrategyKind) {
    run(async move {
        let place = place(kind);
        let log = place.open(small_config(), "open").await;
        let stored = append_all(&log, varied_batches(80, 2), 0).await;
        for batch in &stored {
            let header = batch::validate(batch, usize::MAX).expect("valid");
            for offset in [header.base_offset, header.last_offset()] {
                let regions = log.read(offset, 1).await.expect("read");
                let bytes = regions[0].read_bytes().await.expect("bytes");
                assert_eq!(&split_batches(&bytes)[0], batch, "offset {offset}");
            }
        }
    });
}

fn reads_are_bounded_and_checked(kind: StrategyKind) {
    run(async move {
        let place = place(kind);
        let log = place.open(small_config(), "open").await;
        let batches: Vec<Vec<u8>> = (0..10).map(|seed| make_batch(10, 100, 0, seed)).collect();
        let one = batches[0].len() as u64;
        append_all(&log, batches, 0).await;
        let regions = log.read(0, one * 5 / 2).await.expect("read");
        let bytes = regions[0].read_bytes().await.expect("bytes");
        assert_eq!(
            split_batches(&bytes).len(),
            2,
            "whole batches only, within max_bytes"
        );
        let end = log.log_end_offset();
        assert!(log
            .read(end, 1 << 20)
            .await
            .expect("read at end")
            .is_empty());
        assert!(matches!(
            log.read(end + 1, 1 << 20).await,
            Err(LogError::OffsetOutOfRange { offset, .. }) if offset == end + 1
        ));
        assert!(matches!(
            log.read(-1, 1 << 20).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        // An upper bound (a high watermark) hides the batches at and above it.
        let below = log.read_below(0, 1 << 20, 20).await.expect("read below");
        let bytes = below[0].read_bytes().await.expect("bytes");
        assert_eq!(split_batches(&bytes).len(), 2);
    });
}

fn bad_batches_are_refused_and_the_log_keeps_working(kind: StrategyKind) {
    run(async move {
        let place = place(kind);
        let log = place.open(small_config(), "open").await;
        append_all(&log, vec![make_batch(3, 10, 0, 1)], 0).await;
        let mut corrupt = make_batch(3, 10, 0, 2);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert!(matches!(
            log.append(&corrupt, 0).await,
            Err(LogError::InvalidBatch(
                batch::BatchError::CrcMismatch { .. }
            ))
        ));
        let mut trailing = make_batch(3, 10, 0, 3);
        trailing.extend_from_slice(&[0; 5]);
        assert!(matches!(
            log.append(&trailing, 0).await,
            Err(LogError::TrailingBytes { .. })
        ));
        let garbage = vec![0xAB; 100];
        assert!(log.append(&garbage, 0).await.is_err());
        assert_eq!(log.log_end_offset(), 3, "nothing was appended");
        let stored = append_all(&log, vec![make_batch(2, 10, 0, 4)], 0).await;
        assert_eq!(read_all(&log, 3, 1 << 20).await, stored);
    });
}

fn lookup_by_timestamp_finds_the_first_record_at_or_after(kind: StrategyKind) {
    run(async move {
        let place = place(kind);
        let log = place.open(small_config(), "open").await;
        // 50 batches of 10 records, timestamps 10 ms apart by batch and 1 ms by record.
        let batches: Vec<Vec<u8>> = (0..50)
            .map(|index| make_batch(10, 500, 10_000 + index * 10, index as u64))
            .collect();
        append_all(&log, batches, 0).await;
        for target in [0, 10_000, 10_005, 10_009, 10_010, 10_255, 10_499] {
            let found = log.offset_for_timestamp(target).await.expect("lookup");
            // Record n has timestamp 10_000 + (n / 10) * 10 + n % 10.
            let expected = (0..500).find(|n| 10_000 + (n / 10) * 10 + n % 10 >= target);
            assert_eq!(found.map(|found| found.offset), expected, "target {target}");
        }
        assert_eq!(
            log.offset_for_timestamp(20_000).await.expect("lookup"),
            None
        );
    });
}

fn truncation_cuts_whole_batches_and_appends_continue(kind: StrategyKind) {
    run(async move {
        let place = place(kind);
        let log = place.open(small_config(), "open").await;
        let stored = append_all(&log, varied_batches(60, 3), 1).await;
        let segments_before = log.segment_count();
        // Cut in the middle of batch 10, inside an early segment.
        let cut_batch = batch::validate(&stored[10], usize::MAX).expect("valid");
        let new_end = log
            .truncate_to(cut_batch.base_offset + 1.min(i64::from(cut_batch.last_offset_delta)))
            .await
            .expect("truncate");
        assert_eq!(new_end, cut_batch.base_offset, "a batch goes whole");
        assert!(log.segment_count() < segments_before);
        assert_eq!(read_all(&log, 0, 1 << 20).await, stored[..10].to_vec());
        let more = append_all(&log, varied_batches(30, 4), 2).await;
        let mut expected = stored[..10].to_vec();
        expected.extend(more);
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
        log.close().await.expect("close");
        let reopened = place.open(small_config(), "reopen").await;
        assert_eq!(read_all(&reopened, 0, 1 << 20).await, expected);
        // Truncating to the start empties the log; to the end changes nothing.
        let end = reopened.log_end_offset();
        assert_eq!(reopened.truncate_to(end).await.expect("noop"), end);
        assert_eq!(reopened.truncate_to(0).await.expect("to start"), 0);
        assert!(read_all(&reopened, 0, 1 << 20).await.is_empty());
    });
}

fn retention_deletes_whole_old_segments(kind: StrategyKind) {
    run(async move {
        let place = place(kind);
        let config = LogConfig {
            retention_bytes: Some(600 * 1024),
            ..small_config()
        };
        let log = place.open(config, "open").await;
        let stored = append_all(&log, varied_batches(150, 5), 0).await;
        let size_before = log.size_bytes();
        assert!(size_before > 900 * 1024);
        let deleted = log.enforce_retention(0).await.expect("retention");
        assert!(deleted > 0);
        assert!(log.size_bytes() >= 600 * 1024, "never below the limit");
        assert!(log.size_bytes() < size_before);
        let start = log.log_start_offset();
        assert!(start > 0);
        let kept: Vec<Vec<u8>> = stored
            .into_iter()
            .filter(|batch| {
                batch::validate(batch, usize::MAX)
                    .expect("valid")
                    .base_offset
                    >= start
            })
            .collect();
        assert_eq!(read_all(&log, start, 1 << 20).await, kept);
        assert!(matches!(
            log.read(0, 1).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));

        // By age: timestamps in the batches are around 1_000..16_000 ms.
        let aged_config = LogConfig {
            retention_age_max: Some(Duration::from_millis(1_000)),
            ..small_config()
        };
        drop(log);
        let aged = place.open(aged_config, "reopen").await;
        let segments = aged.segment_count();
        assert_eq!(aged.enforce_retention(0).await.expect("none old yet"), 0);
        let deleted = aged.enforce_retention(1 << 40).await.expect("all old");
        assert_eq!(deleted, segments - 1, "all but the active segment");
    });
}

fn clean_reopen_trusts_indexes_and_keeps_everything(kind: StrategyKind) {
    run(async move {
        let place = place(kind);
        let log = place.open(small_config(), "open").await;
        let mut stored = append_all(&log, varied_batches(70, 6), 0).await;
        log.close().await.expect("close");
        assert!(matches!(log.read(0, 1).await, Err(LogError::Closed { .. })));
        let reopened = place.open(small_config(), "reopen").await;
        let report = reopened.recovery_report();
        assert!(report.clean_shutdown);
        assert_eq!(report.indexes_rebuilt, 0);
        assert!(report.truncated.is_empty());
        stored.extend(append_all(&reopened, varied_batches(5, 7), 0).await);
        assert_eq!(read_all(&reopened, 0, 1 << 20).await, stored);
    });
}

fn reopen_after_sync_without_close_recovers_everything(kind: StrategyKind) {
    run(async move {
        let place = place(kind);
        let config = LogConfig {
            durability: Durability::Always,
            ..small_config()
        };
        let log = place.open(config.clone(), "open").await;
        let stored = append_all(&log, varied_batches(40, 8), 0).await;
        drop(log); // no close: the next open must walk the active segment
        let reopened = place.open(config, "reopen").await;
        let report = reopened.recovery_report().clone();
        assert!(!report.clean_shutdown);
        assert!(report.indexes_rebuilt >= 1, "{report:?}");
        assert!(report.truncated.is_empty(), "{report:?}");
        assert_eq!(read_all(&reopened, 0, 1 << 20).await, stored);
    });
}

fn concurrent_appends_share_group_commits(kind: StrategyKind, commit_mode: CommitMode) {
    run(async move {
        let place = place(kind);
        let config = LogConfig {
            durability: Durability::Always,
            commit_mode,
            segment_bytes: 4 << 20,
            ..small_config()
        };
        let log = place.open(config, "open").await;
        let tasks: Vec<_> = (0..16u64)
            .map(|producer| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    let mut sent = Vec::new();
                    for round in 0..8u64 {
                        let batch = make_batch(4, 1000, 0, producer * 100 + round);
                        let info = log.append(&batch, 0).await.expect("append");
                        sent.push((info.base_offset, as_stored(batch, info.base_offset, 0)));
                    }
                    sent
                })
            })
            .collect();
        let mut sent = Vec::new();
        for task in tasks {
            sent.extend(task.await);
        }
        sent.sort_by_key(|(base_offset, _)| *base_offset);
        let expected_bases: Vec<i64> = (0..128).map(|index| index * 4).collect();
        let bases: Vec<i64> = sent.iter().map(|(base_offset, _)| *base_offset).collect();
        assert_eq!(bases, expected_bases, "offsets unique and contiguous");
        let expected: Vec<Vec<u8>> = sent.into_iter().map(|(_, batch)| batch).collect();
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
    });
}

fn zstd_batches_are_stored_as_sent(kind: StrategyKind) {
    run(async move {
        let place = place(kind);
        let log = place.open(small_config(), "open").await;
        let batches = (0..5)
            .map(|seed| common::make_batch_with(50, 200, 0, seed, Compression::Zstd))
            .collect();
        let stored = append_all(&log, batches, 0).await;
        let read = read_all(&log, 0, 1 << 20).await;
        assert_eq!(read, stored);
        let records = batch::decode_records(&read[2], 1 << 20).expect("decode");
        assert_eq!(records.len(), 50);
    });
}

fn interval_durability_syncs_in_the_background(kind: StrategyKind) {
    run(async move {
        let place = place(kind);
        let config = LogConfig {
            durability: Durability::Interval {
                interval_ms: 5,
                interval_bytes: 64 * 1024,
            },
            ..small_config()
        };
        let log = Rc::new(place.open(config, "open").await);
        let stored = append_all(&log, varied_batches(10, 9), 0).await;
        glommio::timer::sleep(Duration::from_millis(50)).await;
        assert_eq!(read_all(&log, 0, 1 << 20).await, stored);
    });
}

/// The length of the log's first (and here only) segment file, as the file system says.
async fn first_segment_file_len(place: &common::Place) -> u64 {
    let path = place.dir.join(format!("{:020}.log", 0));
    place
        .storage
        .file_len(&path)
        .await
        .expect("stat")
        .expect("the segment file exists")
}

/// Appends batches of about 64 KiB until the log holds at least `bytes`.
async fn append_until(log: &PartitionLog, bytes: u64, stored: &mut Vec<Vec<u8>>, seed: u64) {
    let mut step = 0;
    while log.size_bytes() < bytes {
        let batch = make_batch(16, 4000, 0, seed * 1000 + step);
        stored.extend(append_all(log, vec![batch], 0).await);
        step += 1;
    }
}

/// Space is reserved in steps ahead of the appends, not a whole segment at creation: the
/// file's length is 1 MiB after the first append, then doubles, and stops growing by more
/// than `preallocate_step_bytes` at a time. A log dropped without a close leaves the
/// reserved zeros after its data; recovery trims them as preallocated space (not a torn
/// tail), keeps every batch, and appends reserve again from there.
fn space_is_reserved_in_steps_and_recovery_trims_it(kind: StrategyKind) {
    run(async move {
        const MIB: u64 = 1 << 20;
        let place = place(kind);
        let config = LogConfig {
            segment_bytes: 16 * MIB,
            preallocate_step_bytes: 2 * MIB,
            durability: Durability::Always,
            ..small_config()
        };
        let log = place.open(config.clone(), "open").await;
        assert_eq!(
            first_segment_file_len(&place).await,
            0,
            "nothing reserved at creation"
        );
        let mut stored = Vec::new();
        append_until(&log, 1, &mut stored, 1).await;
        assert_eq!(
            first_segment_file_len(&place).await,
            MIB,
            "the first step is 1 MiB"
        );
        append_until(&log, MIB + 1, &mut stored, 2).await;
        assert_eq!(
            first_segment_file_len(&place).await,
            2 * MIB,
            "then it doubles"
        );
        append_until(&log, 5 * MIB, &mut stored, 3).await;
        let reserved = first_segment_file_len(&place).await;
        assert_eq!(reserved, 6 * MIB, "then grows by the largest step");
        assert_eq!(log.segment_count(), 1);
        drop(log); // no close: the reserved tail stays on disk

        let reopened = place.open(config.clone(), "reopen").await;
        let report = reopened.recovery_report().clone();
        assert!(report.truncated.is_empty(), "{report:?}");
        assert_eq!(
            report.zero_tail_bytes,
            reserved - reopened.size_bytes(),
            "{report:?}"
        );
        assert_eq!(read_all(&reopened, 0, 1 << 20).await, stored);
        assert_eq!(
            first_segment_file_len(&place).await,
            reopened.size_bytes(),
            "recovery trimmed the reserved zeros"
        );
        let recovered_bytes = reopened.size_bytes();
        append_until(&reopened, recovered_bytes + 1, &mut stored, 4).await;
        assert!(first_segment_file_len(&place).await > reopened.size_bytes());
        reopened.close().await.expect("close");
        assert_eq!(
            first_segment_file_len(&place).await,
            reopened.size_bytes(),
            "sealing trims the reservation"
        );
        let again = place.open(config, "reopen after close").await;
        assert_eq!(read_all(&again, 0, 1 << 20).await, stored);
    });
}

/// With preallocation off, no space is reserved: the file is exactly as long as its data
/// (up to the padding of an aligned write), and recovery finds nothing to trim.
fn without_preallocation_the_file_holds_only_data(kind: StrategyKind) {
    run(async move {
        let place = place(kind);
        let config = LogConfig {
            preallocate: false,
            durability: Durability::Always,
            ..small_config()
        };
        let log = place.open(config.clone(), "open").await;
        let mut stored = Vec::new();
        append_until(&log, 100 * 1024, &mut stored, 5).await;
        let len = first_segment_file_len(&place).await;
        assert!(
            len >= log.size_bytes() && len < log.size_bytes() + 4096,
            "{len}"
        );
        drop(log);
        let reopened = place.open(config, "reopen").await;
        assert!(reopened.recovery_report().truncated.is_empty());
        assert_eq!(read_all(&reopened, 0, 1 << 20).await, stored);
    });
}

/// The small-file API (index files, checkpoints, markers): a write replaces the file whole
/// and leaves no temporary file, reads are bounded, a rename moves the file, removing a
/// missing file or directory is no error, and the executor runs its other tasks while the
/// calls are out.
fn small_files_are_replaced_whole_renamed_and_removed(kind: StrategyKind) {
    run(async move {
        let place = place(kind);
        let storage = &place.storage;
        let dir = place.dir.join("small");
        storage
            .create_dir_all_off_thread(&dir)
            .await
            .expect("mkdir");
        let file = dir.join("checkpoint");
        let missing = storage.read_file_off_thread(&file, 64).await;
        assert_eq!(missing.expect("read"), None);

        let ticks = Rc::new(Cell::new(0_u64));
        let ticker = {
            let ticks = Rc::clone(&ticks);
            glommio::spawn_local(async move {
                loop {
                    ticks.set(ticks.get() + 1);
                    futures_lite::future::yield_now().await;
                }
            })
        };
        storage
            .write_file_atomic_off_thread(&file, b"first".to_vec())
            .await
            .expect("write");
        assert!(ticks.get() > 0, "other tasks ran while the write was out");
        drop(ticker);
        let longer = b"second, and longer than the first".to_vec();
        storage
            .write_file_atomic_off_thread(&file, longer.clone())
            .await
            .expect("replace");
        let read = storage
            .read_file_off_thread(&file, 1024)
            .await
            .expect("read");
        assert_eq!(read, Some(longer.clone()));
        let bounded = storage.read_file_off_thread(&file, 6).await.expect("read");
        assert_eq!(bounded, Some(longer[..6].to_vec()), "at most max_bytes");
        assert_eq!(
            storage.list_off_thread(&dir).await.expect("list"),
            vec!["checkpoint".to_string()],
            "no temporary file is left"
        );
        assert_eq!(
            storage.file_len(&file).await.expect("stat"),
            Some(longer.len() as u64)
        );

        let moved = dir.join("moved");
        storage
            .rename_off_thread(&file, &moved)
            .await
            .expect("rename");
        assert_eq!(
            storage.read_file_off_thread(&file, 64).await.expect("read"),
            None
        );
        assert_eq!(
            storage
                .read_file_off_thread(&moved, 1024)
                .await
                .expect("read"),
            Some(longer)
        );
        storage.remove_off_thread(&moved).await.expect("remove");
        storage
            .remove_off_thread(&moved)
            .await
            .expect("a missing file is no error");
        storage.sync_dir_off_thread(&dir).await.expect("sync dir");
        assert!(storage
            .list_off_thread(&dir)
            .await
            .expect("list")
            .is_empty());

        storage
            .write_file_atomic_off_thread(&file, b"doomed".to_vec())
            .await
            .expect("write");
        storage
            .remove_dir_all_off_thread(&dir)
            .await
            .expect("remove the directory");
        assert_eq!(
            storage.read_file_off_thread(&file, 64).await.expect("read"),
            None
        );
        storage
            .remove_dir_all_off_thread(&dir)
            .await
            .expect("a missing directory is no error");
    });
}

macro_rules! conformance {
    ($($strategy:ident => $kind:expr),* $(,)?) => {$(
        mod $strategy {
            use super::*;

            #[test]
            fn append_then_read() { append_then_read_returns_the_same_bytes($kind) }
            #[test]
            fn every_offset() { every_offset_reads_its_own_batch($kind) }
            #[test]
            fn bounded_reads() { reads_are_bounded_and_checked($kind) }
            #[test]
            fn bad_batches() { bad_batches_are_refused_and_the_log_keeps_working($kind) }
            #[test]
            fn timestamps() { lookup_by_timestamp_finds_the_first_record_at_or_after($kind) }
            #[test]
            fn truncation() { truncation_cuts_whole_batches_and_appends_continue($kind) }
            #[test]
            fn retention() { retention_deletes_whole_old_segments($kind) }
            #[test]
            fn clean_reopen() { clean_reopen_trusts_indexes_and_keeps_everything($kind) }
            #[test]
            fn unclean_reopen() { reopen_after_sync_without_close_recovers_everything($kind) }
            #[test]
            fn group_commit_linked() {
                concurrent_appends_share_group_commits($kind, CommitMode::Linked)
            }
            #[test]
            fn group_commit_pipelined() {
                concurrent_appends_share_group_commits($kind, CommitMode::Pipelined)
            }
            #[test]
            fn zstd() { zstd_batches_are_stored_as_sent($kind) }
            #[test]
            fn interval() { interval_durability_syncs_in_the_background($kind) }
            #[test]
            fn reserved_in_steps() { space_is_reserved_in_steps_and_recovery_trims_it($kind) }
            #[test]
            fn no_preallocation() { without_preallocation_the_file_holds_only_data($kind) }
            #[test]
            fn small_files() { small_files_are_replaced_whole_renamed_and_removed($kind) }
        }
    )*};
}

conformance!(
    direct => StrategyKind::Direct,
    buffered => StrategyKind::Buffered,
    uring => StrategyKind::Uring,
    sim => StrategyKind::Sim,
);
