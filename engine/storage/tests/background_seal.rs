//! A roll seals the old segment in the background (`log::seal`), on the simulated disk with
//! its syncs stalled or failed: appends go on into the new segment without waiting for the
//! seal, reads of the segment being sealed work, a crash during the seal loses nothing
//! acknowledged, truncation, retention and close wait for it, and its failures are reported.

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use common::{as_stored, make_batch, read_all, run};
use shardlog_storage::storage::{SimDisk, SimFault, SimOp, Storage};
use shardlog_storage::{Durability, LogConfig, LogError, PartitionLog};

/// Segments of 32 KiB and batches of about 2.2 KiB (not a multiple of a page): a roll every
/// fifteen batches, and segments that end mid-page.
fn config(durability: Durability) -> LogConfig {
    LogConfig {
        segment_bytes: 32 * 1024,
        chunk_bytes: 8 * 1024,
        write_behind_max: 2,
        index_interval_bytes: 4096,
        preallocate_step_bytes: 16 * 1024,
        durability,
        ..LogConfig::default()
    }
}

/// Scheduler turns that are plenty for every background step that is not stalled.
const TURNS_PLENTY: usize = 200;

async fn turns(count: usize) {
    for _ in 0..count {
        futures_lite::future::yield_now().await;
    }
}

fn log_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

fn index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.index"))
}

/// Appends batches tagged from `tag` on until the log has `segments` segments; returns them
/// by base offset as stored.
async fn append_until_segments(
    log: &PartitionLog,
    segments: usize,
    tag: &mut u64,
) -> BTreeMap<i64, Vec<u8>> {
    let mut appended = BTreeMap::new();
    while log.segment_count() < segments {
        let batch = make_batch(3, 700, 0, *tag);
        *tag += 1;
        let info = log.append(&batch, 0).await.expect("append");
        appended.insert(info.base_offset, as_stored(batch, info.base_offset, 0));
    }
    appended
}

/// Appends one batch tagged `tag` and returns it by base offset, as stored.
async fn append_one(log: &PartitionLog, tag: u64) -> Result<(i64, Vec<u8>), LogError> {
    let batch = make_batch(3, 700, 0, tag);
    let info = log.append(&batch, 0).await?;
    Ok((info.base_offset, as_stored(batch, info.base_offset, 0)))
}

fn assert_holds(recovered: &[Vec<u8>], acknowledged: &BTreeMap<i64, Vec<u8>>, context: &str) {
    let by_offset: BTreeMap<i64, &Vec<u8>> = recovered
        .iter()
        .map(|batch| {
            let header = shardlog_storage::batch::validate(batch, usize::MAX).expect("valid");
            (header.base_offset, batch)
        })
        .collect();
    for (offset, batch) in acknowledged {
        assert_eq!(
            by_offset.get(offset).copied(),
            Some(batch),
            "{context}: acknowledged batch at offset {offset} lost"
        );
    }
}

/// With `none`, the append that rolls and those after it return while the old segment's
/// final fdatasync is stalled: they do not wait for the seal. The segment being sealed reads
/// whole meanwhile, and its index files come once the sync is released.
#[test]
fn appends_after_a_roll_do_not_wait_for_the_old_segments_seal() {
    run(async {
        let disk = SimDisk::new(1);
        let storage = Storage::Sim(disk.clone());
        let dir = Path::new("/sim/seal");
        let log = PartitionLog::open(storage, dir, config(Durability::None))
            .await
            .expect("open");
        let mut tag = 0;
        let mut stored = append_until_segments(&log, 1, &mut tag).await;
        // Fill the first segment up to the batch that rolls.
        let batch_bytes = make_batch(3, 700, 0, 0).len() as u64;
        while log.size_bytes() + batch_bytes <= 32 * 1024 {
            let (offset, batch) = append_one(&log, tag).await.expect("append");
            stored.insert(offset, batch);
            tag += 1;
        }
        disk.stall_syncs(&log_path(dir, 0), true);
        for _ in 0..10 {
            let (offset, batch) = append_one(&log, tag).await.expect("append during the seal");
            stored.insert(offset, batch);
            tag += 1;
        }
        turns(TURNS_PLENTY).await;
        assert_eq!(log.segment_count(), 2, "the roll happened");
        assert_eq!(log.seals_in_flight(), 1, "and its seal is still waiting");
        assert_eq!(disk.file_len(&index_path(dir, 0)), None);
        let expected: Vec<Vec<u8>> = stored.values().cloned().collect();
        assert_eq!(
            read_all(&log, 0, 1 << 20).await,
            expected,
            "reads meanwhile"
        );

        disk.stall_syncs(&log_path(dir, 0), false);
        turns(TURNS_PLENTY).await;
        assert_eq!(log.seals_in_flight(), 0);
        assert!(disk.file_len(&index_path(dir, 0)).is_some(), "sealed");
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected, "reads after");
        log.close().await.expect("close");
    });
}

/// With `always`, an append into the new segment is acknowledged while the old segment's
/// trim (its last fdatasync) is stalled: its acknowledgement needs the old segment's batches
/// durable, which they already are, not the trim or the index files. A crash with the seal
/// still stalled loses nothing acknowledged.
#[test]
fn an_acknowledged_append_does_not_wait_for_the_trim_and_survives_a_crash_during_it() {
    run(async {
        let disk = SimDisk::new(2);
        let storage = Storage::Sim(disk.clone());
        let dir = Path::new("/sim/trim");
        let config = config(Durability::Always);
        let log = PartitionLog::open(storage.clone(), dir, config.clone())
            .await
            .expect("open");
        let mut tag = 0;
        let mut acknowledged = append_until_segments(&log, 1, &mut tag).await;
        let batch_bytes = make_batch(3, 700, 0, 0).len() as u64;
        while log.size_bytes() + batch_bytes <= 32 * 1024 {
            let (offset, batch) = append_one(&log, tag).await.expect("append");
            acknowledged.insert(offset, batch);
            tag += 1;
        }
        disk.stall_syncs(&log_path(dir, 0), true);
        for _ in 0..5 {
            let (offset, batch) = append_one(&log, tag)
                .await
                .expect("acknowledged while the old segment's trim is stalled");
            acknowledged.insert(offset, batch);
            tag += 1;
        }
        assert_eq!(log.segment_count(), 2);
        assert_eq!(
            log.seals_in_flight(),
            1,
            "the seal waits on the stalled sync"
        );

        disk.crash();
        drop(log);
        disk.stall_syncs(&log_path(dir, 0), false);
        let reopened = PartitionLog::open(storage, dir, config)
            .await
            .expect("reopen");
        let report = reopened.recovery_report().clone();
        assert!(report.truncated.is_empty(), "{report:?}");
        assert_eq!(report.segments_dropped, 0, "{report:?}");
        let recovered = read_all(&reopened, 0, 1 << 20).await;
        assert_holds(&recovered, &acknowledged, "crash during the trim");
    });
}

/// With `always`, an append into a new file is not acknowledged until the file's name is
/// durable: while the directory's fsync is stalled the append waits, and a crash then loses
/// the new file (and only unacknowledged batches with it).
#[test]
fn an_append_into_a_new_file_waits_for_its_name_to_be_durable() {
    run(async {
        let disk = SimDisk::new(3);
        let storage = Storage::Sim(disk.clone());
        let dir = Path::new("/sim/name");
        let config = config(Durability::Always);
        let log = Rc::new(
            PartitionLog::open(storage.clone(), dir, config.clone())
                .await
                .expect("open"),
        );
        let mut tag = 0;
        let acknowledged = append_until_segments(&log, 1, &mut tag).await;
        let batch_bytes = make_batch(3, 700, 0, 0).len() as u64;
        let mut acknowledged = acknowledged;
        while log.size_bytes() + batch_bytes <= 32 * 1024 {
            let (offset, batch) = append_one(&log, tag).await.expect("append");
            acknowledged.insert(offset, batch);
            tag += 1;
        }
        // The old segment's trim is held too: its index files would otherwise be written,
        // and their directory fsync makes every name in the directory durable.
        disk.stall_syncs(&log_path(dir, 0), true);
        disk.stall_syncs(dir, true);
        let done = Rc::new(Cell::new(false));
        let rolling = {
            let (log, done) = (Rc::clone(&log), Rc::clone(&done));
            glommio::spawn_local(async move {
                let appended = append_one(&log, 9_999).await;
                done.set(true);
                appended
            })
        };
        turns(TURNS_PLENTY).await;
        assert_eq!(log.segment_count(), 2, "the roll happened");
        let new_file = log_path(dir, log.segment_base_offsets()[1]);
        assert!(disk.name_is_volatile(&new_file));
        assert!(!done.get(), "not acknowledged before the name is durable");

        disk.crash();
        disk.stall_syncs(dir, false);
        disk.stall_syncs(&log_path(dir, 0), false);
        assert!(
            rolling.await.is_err(),
            "the crash failed the waiting append"
        );
        drop(log);
        assert_eq!(
            disk.file_len(&new_file),
            None,
            "the crash lost the new name"
        );
        let reopened = PartitionLog::open(storage, dir, config)
            .await
            .expect("reopen");
        let recovered = read_all(&reopened, 0, 1 << 20).await;
        assert_holds(
            &recovered,
            &acknowledged,
            "crash before the name was durable",
        );
    });
}

/// A forced roll away from a recycled file, and a crash while that segment's seal is stalled
/// (its final fdatasync): recovery keeps the next segment's acknowledged batches.
#[test]
fn a_crash_before_a_recycled_segments_trim_keeps_the_next_segment() {
    run(async {
        let disk = SimDisk::new(4);
        let storage = Storage::Sim(disk.clone());
        let dir = Path::new("/sim/recycled");
        let config = LogConfig {
            retention_bytes: Some(64 * 1024),
            ..config(Durability::Always)
        };
        let log = Rc::new(
            PartitionLog::open(storage.clone(), dir, config.clone())
                .await
                .expect("open"),
        );
        let mut acknowledged = BTreeMap::new();
        let mut tag = 0;
        // Until a roll has reused a spare: the active segment is then a recycled file.
        while log.recycle_stats().reused == 0 {
            let (offset, batch) = append_one(&log, tag).await.expect("append");
            acknowledged.insert(offset, batch);
            tag += 1;
            log.enforce_retention(0).await.expect("retention");
        }
        for _ in 0..4 {
            let (offset, batch) = append_one(&log, tag).await.expect("append");
            acknowledged.insert(offset, batch);
            tag += 1;
        }
        let recycled_base = *log.segment_base_offsets().last().expect("a segment");
        disk.stall_syncs(&log_path(dir, recycled_base), true);
        let forced = {
            let log = Rc::clone(&log);
            glommio::spawn_local(async move { log.roll_now().await })
        };
        turns(TURNS_PLENTY).await;
        assert_eq!(
            log.segment_base_offsets().last().copied(),
            Some(log.log_end_offset()),
            "the forced roll put a new segment in place"
        );
        for _ in 0..3 {
            let (offset, batch) = append_one(&log, tag)
                .await
                .expect("acknowledged during the stalled trim");
            acknowledged.insert(offset, batch);
            tag += 1;
        }
        disk.crash();
        disk.stall_syncs(&log_path(dir, recycled_base), false);
        assert!(forced.await.is_err(), "the crash failed the seal");
        drop(log);
        let reopened = PartitionLog::open(storage, dir, config)
            .await
            .expect("reopen");
        let report = reopened.recovery_report().clone();
        assert!(report.truncated.is_empty(), "{report:?}");
        assert_eq!(report.segments_dropped, 0, "{report:?}");
        let start = reopened.log_start_offset();
        let recovered = read_all(&reopened, start, 1 << 20).await;
        let kept: BTreeMap<i64, Vec<u8>> = acknowledged.split_off(&start);
        assert_holds(&recovered, &kept, "crash before a recycled segment's trim");
    });
}

/// What a crash between a roll and its background trim leaves when the old segment is a
/// recycled file: after its last batch, the zero padding of the last aligned write, then its
/// previous life's bytes. (Built by hand: the simulated disk trims in one durable step, so a
/// crash cannot land inside the trim.) The segment ends whole at the next segment's base, so
/// recovery trims that tail and keeps the next segment and everything in it.
#[test]
fn an_untrimmed_segment_that_ends_at_the_next_base_keeps_the_next_segment() {
    run(async {
        let disk = SimDisk::new(9);
        let storage = Storage::Sim(disk.clone());
        let dir = Path::new("/sim/untrimmed");
        let config = config(Durability::Always);
        let log = PartitionLog::open(storage.clone(), dir, config.clone())
            .await
            .expect("open");
        let mut tag = 0;
        let acknowledged = append_until_segments(&log, 3, &mut tag).await;
        turns(TURNS_PLENTY).await;
        assert_eq!(log.seals_in_flight(), 0);
        drop(log);
        let first = log_path(dir, 0);
        let mut bytes = disk.read_whole(&first, 1 << 20).expect("the first segment");
        let data_len = bytes.len();
        assert_ne!(data_len % 4096, 0, "the segment ends mid-page");
        bytes.resize(data_len.next_multiple_of(4096), 0);
        bytes.extend(std::iter::repeat_n(0x5A, 4096));
        disk.write_whole(&first, &bytes).expect("untrim");
        disk.remove(&index_path(dir, 0));

        let reopened = PartitionLog::open(storage, dir, config)
            .await
            .expect("reopen");
        let report = reopened.recovery_report().clone();
        assert!(report.truncated.is_empty(), "{report:?}");
        assert_eq!(report.segments_dropped, 0, "{report:?}");
        assert_eq!(
            report.recycled_tail_bytes,
            (bytes.len() - data_len) as u64,
            "{report:?}"
        );
        assert_eq!(reopened.segment_count(), 3);
        let expected: Vec<Vec<u8>> = acknowledged.values().cloned().collect();
        assert_eq!(read_all(&reopened, 0, 1 << 20).await, expected);
        assert_eq!(
            disk.file_len(&first),
            Some(data_len as u64),
            "trimmed durably"
        );
    });
}

/// Crashes at every scheduler turn while four producers append across several rolls, with
/// `always` (nothing acknowledged may be lost) and `none` (the log must stay a valid prefix
/// that holds everything synced before).
#[test]
fn a_crash_at_any_turn_of_a_background_seal_recovers() {
    for always in [true, false] {
        for crash_turn in 0..60usize {
            run(crash_at_turn(always, crash_turn));
        }
    }
}

async fn crash_at_turn(always: bool, crash_turn: usize) {
    let context = format!("always {always}, crash at turn {crash_turn}");
    let disk = SimDisk::new(crash_turn as u64);
    let storage = Storage::Sim(disk.clone());
    let dir = Path::new("/sim/turns");
    let config = config(if always {
        Durability::Always
    } else {
        Durability::None
    });
    let log = Rc::new(
        PartitionLog::open(storage.clone(), dir, config.clone())
            .await
            .expect("open"),
    );
    let mut tag = 0;
    let mut synced = append_until_segments(&log, 1, &mut tag).await;
    log.sync().await.expect("sync");
    let acknowledged = Rc::new(std::cell::RefCell::new(BTreeMap::new()));
    let producers: Vec<_> = (0..4u64)
        .map(|producer| {
            let (log, acknowledged) = (Rc::clone(&log), Rc::clone(&acknowledged));
            glommio::spawn_local(async move {
                for step in 0..20u64 {
                    match append_one(&log, 1000 + producer * 100 + step).await {
                        Ok((offset, batch)) => {
                            acknowledged.borrow_mut().insert(offset, batch);
                        }
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    turns(crash_turn).await;
    disk.crash();
    for producer in producers {
        producer.await;
    }
    drop(log);
    let reopened = PartitionLog::open(storage, dir, config)
        .await
        .unwrap_or_else(|error| panic!("{context}: reopen: {error}"));
    let recovered = read_all(&reopened, 0, 1 << 20).await;
    if always {
        synced.extend(acknowledged.take());
    }
    assert_holds(&recovered, &synced, &context);
}

/// A truncation into the segment being sealed waits for the seal, then removes what the seal
/// wrote for the old contents (its index files); the log reads, closes and reopens right.
#[test]
fn a_truncation_waits_for_the_seal_of_the_segment_it_cuts() {
    run(async {
        let disk = SimDisk::new(5);
        let storage = Storage::Sim(disk.clone());
        let dir = Path::new("/sim/truncate");
        let config = config(Durability::None);
        let log = Rc::new(
            PartitionLog::open(storage.clone(), dir, config.clone())
                .await
                .expect("open"),
        );
        let mut tag = 0;
        disk.stall_syncs(&log_path(dir, 0), true);
        let stored = append_until_segments(&log, 2, &mut tag).await;
        let cut_at = *stored.keys().nth(5).expect("a batch to cut at");
        let done = Rc::new(Cell::new(false));
        let truncation = {
            let (log, done) = (Rc::clone(&log), Rc::clone(&done));
            glommio::spawn_local(async move {
                let end = log.truncate_to(cut_at).await;
                done.set(true);
                end
            })
        };
        turns(TURNS_PLENTY).await;
        assert!(!done.get(), "the truncation waits for the seal");
        disk.stall_syncs(&log_path(dir, 0), false);
        assert_eq!(truncation.await.expect("truncate"), cut_at);
        assert_eq!(log.segment_count(), 1);
        assert_eq!(
            disk.file_len(&index_path(dir, 0)),
            None,
            "no index files of the old contents"
        );
        let mut expected: Vec<Vec<u8>> = stored.range(..cut_at).map(|(_, b)| b.clone()).collect();
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
        let (_, batch) = append_one(&log, 7_777).await.expect("append after the cut");
        expected.push(batch);
        log.close().await.expect("close");
        let reopened = PartitionLog::open(storage, dir, config)
            .await
            .expect("reopen");
        assert!(reopened.recovery_report().clean_shutdown);
        assert_eq!(read_all(&reopened, 0, 1 << 20).await, expected);
    });
}

/// Retention waits for the seal of the segment it drops; close waits for every seal and
/// leaves index files the next open can trust.
#[test]
fn retention_and_close_wait_for_pending_seals() {
    run(async {
        let disk = SimDisk::new(6);
        let storage = Storage::Sim(disk.clone());
        let dir = Path::new("/sim/retention");
        let config = LogConfig {
            retention_bytes: Some(1),
            ..config(Durability::None)
        };
        let log = Rc::new(
            PartitionLog::open(storage.clone(), dir, config.clone())
                .await
                .expect("open"),
        );
        let mut tag = 0;
        disk.stall_syncs(&log_path(dir, 0), true);
        let mut stored = append_until_segments(&log, 2, &mut tag).await;
        let second_base = log.segment_base_offsets()[1];
        let done = Rc::new(Cell::new(false));
        let retention = {
            let (log, done) = (Rc::clone(&log), Rc::clone(&done));
            glommio::spawn_local(async move {
                let deleted = log.enforce_retention(0).await;
                done.set(true);
                deleted
            })
        };
        turns(TURNS_PLENTY).await;
        assert!(!done.get(), "retention waits for the seal");
        disk.stall_syncs(&log_path(dir, 0), false);
        assert_eq!(retention.await.expect("retention"), 1);
        assert_eq!(log.log_start_offset(), second_base);
        assert_eq!(disk.file_len(&log_path(dir, 0)), None);
        assert_eq!(disk.file_len(&index_path(dir, 0)), None);
        stored = stored.split_off(&second_base);

        // A seal pending at close.
        disk.stall_syncs(&log_path(dir, second_base), true);
        stored.extend(append_until_segments(&log, 2, &mut tag).await);
        assert_eq!(log.seals_in_flight(), 1);
        let closing = {
            let log = Rc::clone(&log);
            glommio::spawn_local(async move { log.close().await })
        };
        turns(TURNS_PLENTY).await;
        disk.stall_syncs(&log_path(dir, second_base), false);
        closing.await.expect("close");
        assert!(disk.file_len(&index_path(dir, second_base)).is_some());
        let reopened = PartitionLog::open(storage, dir, config)
            .await
            .expect("reopen");
        let report = reopened.recovery_report();
        assert!(report.clean_shutdown);
        assert_eq!(report.indexes_rebuilt, 0, "{report:?}");
        let expected: Vec<Vec<u8>> = stored.values().cloned().collect();
        assert_eq!(read_all(&reopened, second_base, 1 << 20).await, expected);
    });
}

/// The old segment's final fdatasync fails in the background: the error is not lost. The log
/// is failed, later appends are refused naming the first error, close refuses, and `reopen`
/// recovers a valid log that takes appends again.
#[test]
fn a_failed_background_sync_fails_the_log_until_it_is_reopened() {
    run(async {
        let disk = SimDisk::new(7);
        let storage = Storage::Sim(disk.clone());
        let dir = Path::new("/sim/failed-seal");
        let config = config(Durability::None);
        let log = PartitionLog::open(storage.clone(), dir, config.clone())
            .await
            .expect("open");
        let mut tag = 0;
        append_until_segments(&log, 1, &mut tag).await;
        log.sync().await.expect("sync");
        let synced: Vec<Vec<u8>> = read_all(&log, 0, 1 << 20).await;
        let batch_bytes = make_batch(3, 700, 0, 0).len() as u64;
        while log.size_bytes() + batch_bytes <= 32 * 1024 {
            append_one(&log, tag).await.expect("append");
            tag += 1;
        }
        disk.fail_with(SimOp::Sync, Some(SimFault::Io));
        append_one(&log, tag)
            .await
            .expect("the rolling append is in memory only");
        turns(TURNS_PLENTY).await;
        assert!(log.is_failed(), "the background sync failed the log");
        let error = append_one(&log, 8_888).await.expect_err("a failed log");
        assert!(error.to_string().contains("refuses writes"), "{error}");
        assert!(log.close().await.is_err(), "no clean close of a failed log");

        disk.fail_with(SimOp::Sync, None);
        let log = log.reopen().await.expect("reopen");
        assert!(!log.is_failed());
        let recovered = read_all(&log, 0, 1 << 20).await;
        assert_eq!(recovered[..synced.len()], synced[..], "a valid prefix");
        append_one(&log, 9_999).await.expect("appends again");
        log.close().await.expect("close");
    });
}

/// The directory fsync that makes a new segment's name durable fails: the append waiting
/// for it under `always` is refused, the log is failed, and `reopen` brings it back with
/// every acknowledged batch.
#[test]
fn a_failed_directory_sync_refuses_the_append_and_fails_the_log() {
    run(async {
        let disk = SimDisk::new(8);
        let storage = Storage::Sim(disk.clone());
        let dir = Path::new("/sim/failed-name");
        let config = config(Durability::Always);
        let log = PartitionLog::open(storage.clone(), dir, config.clone())
            .await
            .expect("open");
        let mut tag = 0;
        let mut acknowledged = append_until_segments(&log, 1, &mut tag).await;
        let batch_bytes = make_batch(3, 700, 0, 0).len() as u64;
        while log.size_bytes() + batch_bytes <= 32 * 1024 {
            let (offset, batch) = append_one(&log, tag).await.expect("append");
            acknowledged.insert(offset, batch);
            tag += 1;
        }
        disk.fail_with(SimOp::SyncDir, Some(SimFault::Io));
        let error = append_one(&log, tag)
            .await
            .expect_err("not acknowledged without a durable name");
        assert!(error.to_string().contains("fsync"), "{error}");
        assert!(log.is_failed());
        disk.fail_with(SimOp::SyncDir, None);
        let log = log.reopen().await.expect("reopen");
        let (offset, batch) = append_one(&log, 9_999).await.expect("appends again");
        acknowledged.insert(offset, batch);
        drop(log);
        disk.crash();
        let reopened = PartitionLog::open(storage, dir, config)
            .await
            .expect("open after a crash");
        let recovered = read_all(&reopened, 0, 1 << 20).await;
        assert_holds(&recovered, &acknowledged, "after a failed directory sync");
    });
}
