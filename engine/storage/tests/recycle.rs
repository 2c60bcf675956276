//! Recycled segments (`LogConfig::recycle_segments`): retention keeps dropped segments' files
//! as spares and rolls overwrite them. A recycled file holds old batches with valid CRCs after
//! the new segment's end; these tests prove they are never read, never recovered (after a
//! crash at any point, on the simulated disk and on real files), never counted as log, and
//! that a file someone may still be reading is deleted rather than recycled.

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use common::{
    alternating_commit_mode, as_stored, crash_rounds, make_batch, place, read_all, run, CrashPlan,
};
use shardlog_storage::batch;
use shardlog_storage::storage::{SimDisk, Storage};
use shardlog_storage::{Durability, LogConfig, LogError, PartitionLog, StrategyKind};

/// Segments of about seven 2.3 KB batches; retention keeps about two of them.
fn recycle_config(durability: Durability) -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        retention_bytes: Some(32 * 1024),
        chunk_bytes: 8 * 1024,
        write_behind_max: 3,
        durability,
        ..LogConfig::default()
    }
}

fn header(batch: &[u8]) -> batch::BatchHeader {
    batch::validate(batch, usize::MAX).expect("valid")
}

/// A batch of 3 records, about 2.3 KB; or, `page_sized`, of one record and exactly 4096 bytes,
/// so batch boundaries fall on page boundaries: then a crash leaves an old batch (CRC intact)
/// exactly where the new data ends, with no padding between, the worst case for recovery.
fn test_batch(seed: u64, page_sized: bool) -> Vec<u8> {
    if !page_sized {
        return make_batch(3, 700, 0, seed);
    }
    // Seeds of equal digit count give equal sizes; find the value size that makes 4096.
    let seed = 100_000 + seed % 100_000;
    (3900..4096)
        .map(|value_bytes| make_batch(1, value_bytes, 0, seed))
        .find(|batch| batch.len() == 4096)
        .expect("a value size gives a 4096-byte batch")
}

/// Appends `count` batches, enforcing retention after each; returns them by base offset.
async fn fill(log: &PartitionLog, count: u64, seed: u64) -> BTreeMap<i64, Vec<u8>> {
    fill_with(log, count, seed, true, false).await
}

async fn fill_with(
    log: &PartitionLog,
    count: u64,
    seed: u64,
    retention: bool,
    page_sized: bool,
) -> BTreeMap<i64, Vec<u8>> {
    let mut stored = BTreeMap::new();
    for step in 0..count {
        let batch = test_batch(seed * 1000 + step, page_sized);
        let info = log.append(&batch, 0).await.expect("append");
        stored.insert(info.base_offset, as_stored(batch, info.base_offset, 0));
        if retention {
            log.enforce_retention(0).await.expect("retention");
        }
    }
    stored
}

/// The batches the log serves from its start to its end, checked to be exactly `expected`'s
/// batches from the log start on, with contiguous offsets (a stale batch would break them).
async fn assert_serves(log: &PartitionLog, expected: &BTreeMap<i64, Vec<u8>>, what: &str) {
    let start = log.log_start_offset();
    let served = read_all(log, start, 1 << 20).await;
    let mut next = start;
    for batch in &served {
        let header = header(batch);
        assert_eq!(
            header.base_offset, next,
            "{what}: offsets must be contiguous"
        );
        assert_eq!(
            expected.get(&header.base_offset),
            Some(batch),
            "{what}: batch at {next} is not the one appended there"
        );
        next = header.last_offset() + 1;
    }
    assert_eq!(
        next,
        log.log_end_offset(),
        "{what}: served up to the log end"
    );
    let wanted = expected.range(start..).count();
    assert_eq!(served.len(), wanted, "{what}: every retained batch served");
    // Reading at the end gives nothing, past it is out of range: never the file's old bytes.
    assert!(log
        .read(next, 1 << 20)
        .await
        .expect("read at end")
        .is_empty());
    assert!(matches!(
        log.read(next + 1, 1 << 20).await,
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

fn spare_files(dir: &Path) -> Vec<PathBuf> {
    let mut spares: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "spare")
        })
        .collect();
    spares.sort();
    spares
}

fn log_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

#[test]
fn retention_keeps_files_and_rolls_overwrite_them() {
    for kind in [
        StrategyKind::Sim,
        StrategyKind::Direct,
        StrategyKind::Uring,
        StrategyKind::Buffered,
    ] {
        run(async move {
            let place = place(kind);
            let config = recycle_config(Durability::None);
            let log = place.open(config, "open").await;
            let stored = fill(&log, 80, 1).await;
            let stats = log.recycle_stats();
            if kind == StrategyKind::Buffered {
                assert_eq!(stats.kept, 0, "buffered deletes dropped segments");
                assert_eq!(stats.reused, 0);
            } else {
                assert!(stats.reused >= 5, "{kind}: rolls reuse spares: {stats:?}");
                assert!(
                    stats.spares <= shardlog_storage::log::SPARE_SEGMENTS_MAX,
                    "{kind}"
                );
            }
            if kind != StrategyKind::Sim {
                assert_eq!(spare_files(&place.dir).len(), stats.spares, "{kind}");
            }
            assert!(log.segment_count() <= 4, "{kind}: retention ran");
            assert_serves(&log, &stored, &format!("{kind}")).await;
        });
    }
}

#[test]
fn recycling_can_be_turned_off() {
    run(async {
        let place = place(StrategyKind::Direct);
        let config = LogConfig {
            recycle_segments: false,
            ..recycle_config(Durability::None)
        };
        let log = place.open(config, "open").await;
        let stored = fill(&log, 60, 2).await;
        assert_eq!(log.recycle_stats(), Default::default());
        assert!(spare_files(&place.dir).is_empty());
        assert_serves(&log, &stored, "off").await;
    });
}

/// Fills a log until its spares exist, rolls onto one, appends `new_batches` durably, then
/// loses power (sim) or dies without closing (real files). The old batches still in the
/// recycled file must not come back, and every acknowledged batch must.
async fn crash_in_a_recycled_segment(kind: StrategyKind, new_batches: u64, page_sized: bool) {
    let place = place(kind);
    let config = recycle_config(Durability::Always);
    let log = place.open(config.clone(), "open").await;
    let mut stored = fill_with(&log, 40, 3, true, page_sized).await;
    assert!(
        log.recycle_stats().spares >= 1,
        "{kind}: a spare is waiting"
    );
    let reused = log.recycle_stats().reused;
    log.roll_now().await.expect("roll");
    assert_eq!(
        log.recycle_stats().reused,
        reused + 1,
        "{kind}: rolled onto a spare"
    );
    let active_base = log.log_end_offset();
    for step in 0..new_batches {
        let batch = test_batch(9000 + step, page_sized);
        let info = log.append(&batch, 0).await.expect("append");
        stored.insert(info.base_offset, as_stored(batch, info.base_offset, 0));
    }
    // Right after the new data, the old file holds an old batch (page-sized batches), or
    // the zero padding of the last aligned write and then old bytes.
    let stale_at_end = new_batches == 0 || page_sized;
    let new_len: usize = stored
        .range(active_base..)
        .map(|(_, batch)| batch.len())
        .sum();
    if let Storage::Sim(disk) = &place.storage {
        disk.crash();
    }
    drop(log);

    if kind != StrategyKind::Sim && stale_at_end {
        // The hazard is real: right after the new batches sits an old batch, CRC intact,
        // whose offset is below the segment's base. Only the offset check stops it.
        let file = std::fs::File::open(log_path(&place.dir, active_base)).expect("open");
        let mut old = vec![0u8; 4096];
        file.read_exact_at(&mut old, new_len as u64)
            .expect("the recycled file is longer than its new data");
        let length = u32::from_be_bytes(old[8..12].try_into().unwrap()) as usize + 12;
        let mut whole = vec![0u8; length];
        file.read_exact_at(&mut whole, new_len as u64)
            .expect("old batch");
        let stale = header(&whole);
        assert!(stale.base_offset < active_base, "{kind}: {stale:?}");
    }

    let log = place.open(config.clone(), "reopen").await;
    let report = log.recovery_report().clone();
    if stale_at_end {
        // The walk meets an old batch first: reported as the recycled file's old contents.
        assert!(report.truncated.is_empty(), "{kind}: {report:?}");
        assert!(report.recycled_tail_bytes > 0, "{kind}: {report:?}");
    } else {
        // After new data the walk meets the zero padding of the last aligned write first,
        // then old bytes mid-batch: that may be reported as a cut torn tail (never lost
        // acknowledged data, which the checks below prove).
        assert!(report.truncated.len() <= 1, "{kind}: {report:?}");
        assert!(
            report.recycled_tail_bytes > 0 || !report.truncated.is_empty(),
            "{kind}: {report:?}"
        );
    }
    let last = stored.values().last().expect("batches");
    assert_eq!(
        log.log_end_offset(),
        header(last).last_offset() + 1,
        "{kind}"
    );
    assert_serves(&log, &stored, &format!("{kind} after crash")).await;
    // Appends continue, and another unclean reopen still finds exactly the log.
    let more = fill(&log, 20, 4).await;
    stored.extend(more);
    assert_serves(&log, &stored, &format!("{kind} after more")).await;
    if let Storage::Sim(disk) = &place.storage {
        disk.crash();
    }
    drop(log);
    let log = place.open(config, "reopen again").await;
    assert_serves(&log, &stored, &format!("{kind} after second crash")).await;
}

#[test]
fn stale_batches_of_a_recycled_file_are_never_recovered() {
    for kind in [StrategyKind::Sim, StrategyKind::Direct, StrategyKind::Uring] {
        for new_batches in [0, 1, 3] {
            for page_sized in [false, true] {
                run(crash_in_a_recycled_segment(kind, new_batches, page_sized));
            }
        }
    }
}

#[test]
fn spares_survive_a_clean_reopen_and_are_never_data() {
    run(async {
        let place = place(StrategyKind::Direct);
        let config = recycle_config(Durability::None);
        let log = place.open(config.clone(), "open").await;
        let stored = fill(&log, 60, 5).await;
        let (segments, size) = (log.segment_count(), log.size_bytes());
        let spares = log.recycle_stats().spares;
        assert!(spares >= 1);
        let log_end = log.log_end_offset();
        log.close().await.expect("close");

        // A spare whose old batches reach past the log end could alias future offsets: the
        // open must delete it. So must it a file that is not a spare's name.
        let too_new = place.dir.join(format!("{:020}.spare", log_end + 1));
        std::fs::copy(&spare_files(&place.dir)[0], &too_new).expect("copy");
        std::fs::write(place.dir.join("junk.spare"), b"x").expect("junk");

        let log = place.open(config.clone(), "reopen").await;
        let report = log.recovery_report();
        assert_eq!(report.spares_kept, spares, "{report:?}");
        assert_eq!(report.spares_deleted, 2, "{report:?}");
        assert!(!too_new.exists());
        assert_eq!(log.segment_count(), segments, "spares are not segments");
        assert_eq!(log.size_bytes(), size, "spares are not counted as log");
        assert_serves(&log, &stored, "reopened").await;
        let reused = log.recycle_stats().reused;
        log.roll_now().await.expect("roll");
        assert_eq!(
            log.recycle_stats().reused,
            reused + 1,
            "a kept spare is reused"
        );
        log.close().await.expect("close");

        // With recycling off, the next open deletes every spare.
        let off = LogConfig {
            recycle_segments: false,
            ..config
        };
        let log = place.open(off, "reopen without recycling").await;
        assert_eq!(log.recovery_report().spares_kept, 0);
        assert!(spare_files(&place.dir).is_empty());
        assert_serves(&log, &stored, "without recycling").await;
    });
}

/// A fetch response holds a descriptor of the oldest segment while retention drops it: the
/// file must be deleted (its bytes stay readable through the descriptor), not overwritten.
#[test]
fn a_file_still_being_sent_is_deleted_not_recycled() {
    for kind in [StrategyKind::Direct, StrategyKind::Uring] {
        run(async move {
            let place = place(kind);
            let config = recycle_config(Durability::None);
            let log = place.open(config, "open").await;
            fill_with(&log, 30, 6, false, false).await;
            assert!(log.segment_count() >= 4, "{kind}");
            // What the broker does for a fetch: keep the region's shared descriptor.
            let region = log.read(0, 1 << 20).await.expect("read").remove(0);
            let pinned = region.shared_fd().expect("a kernel file").expect("dup");
            let held = region.read_bytes().await.expect("bytes");
            assert_eq!(header(&held).base_offset, 0);
            drop(region);

            let dropped = log.enforce_retention(0).await.expect("retention");
            assert!(dropped >= 2, "{kind}");
            let stats = log.recycle_stats();
            assert_eq!(
                stats.kept as usize,
                dropped - 1,
                "{kind}: all but the pinned one"
            );
            assert!(!log_path(&place.dir, 0).exists(), "{kind}");
            // Roll onto the spares and overwrite them: the pinned segment was deleted, not
            // recycled, so its descriptor still reads the bytes it was handed.
            let more = fill(&log, 30, 7).await;
            assert!(log.recycle_stats().reused >= 2, "{kind}");
            let mut again = vec![0u8; held.len()];
            std::fs::File::from(pinned.try_clone().expect("dup"))
                .read_exact_at(&mut again, 0)
                .expect("pread");
            assert_eq!(again, held, "{kind}");
            assert_serves(&log, &more, &format!("{kind}")).await;
        });
    }
}

/// Concurrent producers with `Always` durability, retention recycling segments all along, and
/// the simulated disk crashing at seeded points. Every acknowledged batch still in the log
/// must come back at its offset, byte for byte, and nothing else (offsets contiguous).
fn acknowledged_batches_survive_with_recycling(seed: u64) {
    run(async move {
        let config = LogConfig {
            commit_mode: alternating_commit_mode(seed),
            ..recycle_config(Durability::Always)
        };
        let plan = CrashPlan {
            steps_per_producer: 60,
            turns_max: 400,
            enforce_retention: true,
        };
        let mut reused = 0;
        crash_rounds(seed, Path::new("/sim/recycle"), &config, &plan, |log| {
            reused += log.recycle_stats().reused;
        })
        .await;
        assert!(
            reused > 0,
            "seed {seed}: the crashes must hit recycled segments"
        );
    });
}

#[test]
fn acknowledged_batches_survive_random_crashes_with_recycling() {
    let seeds: u64 = std::env::var("SHARDLOG_CRASH_SEEDS")
        .ok()
        .and_then(|seeds| seeds.parse().ok())
        .unwrap_or(40);
    for seed in 0..seeds {
        acknowledged_batches_survive_with_recycling(seed);
    }
}

/// Retention's file work (the rename into the spare pool and its directory fsync) runs after
/// the append lock is released: with that fsync held, appends go on, and the spare is not
/// offered to a roll before its rename is durable. A crash meanwhile finds the file under
/// either name: the log then starts where retention left it or earlier, and keeps every
/// batch that was durable.
#[test]
fn retention_renames_into_the_pool_outside_the_append_lock() {
    run(async {
        for crash in [false, true] {
            let disk = SimDisk::new(11);
            let storage = Storage::Sim(disk.clone());
            let dir = Path::new("/sim/retire");
            let config = recycle_config(Durability::None);
            let log = Rc::new(
                PartitionLog::open(storage.clone(), dir, config.clone())
                    .await
                    .expect("open"),
            );
            let mut stored = fill_with(&log, 30, 3, false, false).await;
            while log.seals_in_flight() > 0 {
                futures_lite::future::yield_now().await;
            }
            log.sync().await.expect("sync");
            let synced_end = log.log_end_offset();
            let start_before = log.log_start_offset();
            let segments_before = log.segment_count();

            disk.stall_syncs(dir, true);
            let done = Rc::new(Cell::new(false));
            let retention = {
                let (log, done) = (Rc::clone(&log), Rc::clone(&done));
                glommio::spawn_local(async move {
                    let dropped = log.enforce_retention(0).await;
                    done.set(true);
                    dropped
                })
            };
            for _ in 0..50 {
                futures_lite::future::yield_now().await;
            }
            assert!(
                log.segment_count() < segments_before,
                "retention dropped segments"
            );
            let start_after_retention = log.log_start_offset();
            assert!(start_after_retention > start_before);
            assert!(!done.get(), "its rename waits for the directory fsync");
            assert_eq!(
                log.recycle_stats().kept,
                0,
                "no spare before its rename is durable"
            );
            let appended = Rc::new(Cell::new(false));
            let appending = {
                let (log, appended) = (Rc::clone(&log), Rc::clone(&appended));
                glommio::spawn_local(async move {
                    let more = fill_with(&log, 2, 4, false, false).await;
                    appended.set(true);
                    more
                })
            };
            for _ in 0..50 {
                futures_lite::future::yield_now().await;
            }
            assert!(
                appended.get(),
                "appends go on while retention's rename is held"
            );
            stored.extend(appending.await);
            assert_eq!(log.recycle_stats().reused, 0);

            if crash {
                disk.crash();
                disk.stall_syncs(dir, false);
                // The interrupted rename falls back to deleting the file; either way the
                // task ends. (The simulated process outlives its crash; recovery below runs
                // on what the disk holds then.)
                let _ = retention.await;
                drop(log);
                let reopened = PartitionLog::open(storage, dir, config)
                    .await
                    .expect("open after a crash");
                let start = reopened.log_start_offset();
                assert!(
                    start <= start_after_retention,
                    "a crash may undo retention, never drop more"
                );
                let served = read_all(&reopened, start, 1 << 20).await;
                let mut next = start;
                for batch in &served {
                    assert_eq!(stored.get(&next), Some(batch), "batch at {next}");
                    next = header(batch).last_offset() + 1;
                }
                assert!(next >= synced_end, "every synced batch is served");
                continue;
            }
            disk.stall_syncs(dir, false);
            let dropped = retention.await.expect("retention");
            assert!(dropped >= 1);
            let stats = log.recycle_stats();
            assert!(stats.kept >= 1 && stats.spares >= 1, "{stats:?}");
            assert!(
                disk.list(dir).iter().any(|name| name.ends_with(".spare")),
                "{:?}",
                disk.list(dir)
            );
            assert_serves(&log, &stored, "after retention").await;
        }
    });
}
