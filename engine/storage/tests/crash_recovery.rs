//! Recovery after crashes: the simulated disk crashes at random points (dropping, keeping or
//! tearing each unsynced write, by seed), and real files are cut short or corrupted behind the
//! engine's back. Nothing acknowledged as durable may be lost; the log must stay a valid prefix.

mod common;

use std::path::Path;

use common::{
    alternating_commit_mode, as_stored, crash_rounds, make_batch, place, read_all, run, CrashPlan,
};
use shardlog_storage::batch;
use shardlog_storage::storage::{SimDisk, Storage};
use shardlog_storage::{Durability, LogConfig, PartitionLog, StrategyKind};

fn crash_config(durability: Durability) -> LogConfig {
    LogConfig {
        segment_bytes: 128 * 1024,
        chunk_bytes: 8 * 1024,
        write_behind_max: 3,
        durability,
        ..LogConfig::default()
    }
}

fn base_offset(batch: &[u8]) -> i64 {
    batch::validate(batch, usize::MAX)
        .expect("valid")
        .base_offset
}

/// Concurrent producers append with `Always` durability; the disk crashes after a seeded number
/// of scheduler turns. Every acknowledged batch must come back at its offset, byte for byte.
fn acknowledged_batches_survive(seed: u64) {
    run(async move {
        let config = LogConfig {
            commit_mode: alternating_commit_mode(seed),
            ..crash_config(Durability::Always)
        };
        let plan = CrashPlan {
            steps_per_producer: 50,
            turns_max: 60,
            enforce_retention: false,
        };
        crash_rounds(seed, Path::new("/sim/crash"), &config, &plan, |_| {}).await;
    });
}

#[test]
fn acknowledged_batches_survive_random_crashes() {
    let seeds: u64 = std::env::var("SHARDLOG_CRASH_SEEDS")
        .ok()
        .and_then(|seeds| seeds.parse().ok())
        .unwrap_or(40);
    for seed in 0..seeds {
        acknowledged_batches_survive(seed);
    }
}

/// With no fsync policy, a crash keeps at least everything before the last explicit sync.
#[test]
fn without_fsync_a_crash_keeps_everything_before_the_last_sync() {
    for seed in 0..20u64 {
        run(async move {
            let disk = SimDisk::new(seed);
            let storage = Storage::Sim(disk.clone());
            let dir = Path::new("/sim/none");
            let config = crash_config(Durability::None);
            let log = PartitionLog::open(storage.clone(), dir, config.clone())
                .await
                .expect("open");
            let mut synced = Vec::new();
            for step in 0..30u64 {
                let batch = make_batch(2, 900, 0, seed * 100 + step);
                let info = log.append(&batch, 0).await.expect("append");
                synced.push(as_stored(batch, info.base_offset, 0));
            }
            log.sync().await.expect("sync");
            for step in 30..60u64 {
                let batch = make_batch(2, 900, 0, seed * 100 + step);
                log.append(&batch, 0).await.expect("append");
            }
            disk.crash();
            drop(log);
            let reopened = PartitionLog::open(storage, dir, config)
                .await
                .expect("reopen");
            let recovered = read_all(&reopened, 0, 1 << 20).await;
            assert!(recovered.len() >= synced.len(), "seed {seed}");
            assert_eq!(recovered[..synced.len()], synced[..], "seed {seed}");
        });
    }
}

/// A failed write poisons the log: later appends fail rather than write after a hole, data
/// already written stays readable, and a restart recovers the acknowledged batches.
#[test]
fn a_failed_write_poisons_appends_and_loses_nothing_acknowledged() {
    run(async {
        let disk = SimDisk::new(3);
        let storage = Storage::Sim(disk.clone());
        let dir = Path::new("/sim/fail");
        let config = crash_config(Durability::Always);
        let log = PartitionLog::open(storage.clone(), dir, config.clone())
            .await
            .expect("open");
        let mut acknowledged = Vec::new();
        for step in 0..10 {
            let batch = make_batch(2, 500, 0, step);
            let info = log.append(&batch, 0).await.expect("append");
            acknowledged.push(as_stored(batch, info.base_offset, 0));
        }
        disk.fail_writes(true);
        let batch = make_batch(2, 500, 0, 99);
        assert!(log.append(&batch, 0).await.is_err());
        disk.fail_writes(false);
        let batch = make_batch(2, 500, 0, 100);
        let error = log.append(&batch, 0).await.expect_err("poisoned");
        assert!(error.to_string().contains("refuses writes"), "{error}");
        // What reached the file stays readable; the unwritten batch is not served.
        let readable = read_all_written(&log).await;
        assert_eq!(readable, acknowledged);
        drop(log);
        disk.crash();
        let reopened = PartitionLog::open(storage, dir, config)
            .await
            .expect("reopen");
        let recovered = read_all(&reopened, 0, 1 << 20).await;
        assert_eq!(recovered[..acknowledged.len()], acknowledged[..]);
    });
}

/// Writes `count` batches with `Always` durability to a real directory and drops the log
/// without closing it. Returns the batches as stored.
async fn write_unclean(
    storage: &Storage,
    dir: &Path,
    config: &LogConfig,
    count: u64,
) -> Vec<Vec<u8>> {
    let log = PartitionLog::open(storage.clone(), dir, config.clone())
        .await
        .expect("open");
    let mut stored = Vec::new();
    for step in 0..count {
        let batch = make_batch(5, 400, step as i64, step);
        let info = log.append(&batch, 0).await.expect("append");
        stored.push(as_stored(batch, info.base_offset, 0));
    }
    stored
}

fn last_log_file(dir: &Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a log file")
}

fn real_kinds() -> [StrategyKind; 3] {
    StrategyKind::ALL_REAL
}

#[test]
fn a_file_cut_short_recovers_to_the_last_whole_batch() {
    for kind in real_kinds() {
        run(async move {
            let place = place(kind);
            let config = crash_config(Durability::Always);
            let stored = write_unclean(&place.storage, &place.dir, &config, 12).await;
            let path = last_log_file(&place.dir);
            // Inside the last batch (the file may be longer: aligned strategies pad).
            let data_len: usize = stored.iter().map(Vec::len).sum();
            let cut = data_len as u64 - 100;
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .expect("open")
                .set_len(cut)
                .expect("cut");
            let log = place.open(config, "reopen").await;
            assert_eq!(log.recovery_report().truncated.len(), 1, "{kind}");
            assert_eq!(
                read_all(&log, 0, 1 << 20).await,
                stored[..11].to_vec(),
                "{kind}"
            );
            let next = make_batch(1, 10, 0, 77);
            let info = log.append(&next, 0).await.expect("append after recovery");
            assert_eq!(info.base_offset, 55, "{kind}");
        });
    }
}

#[test]
fn a_corrupt_byte_cuts_the_log_at_its_batch() {
    for kind in real_kinds() {
        run(async move {
            let place = place(kind);
            let config = crash_config(Durability::Always);
            let stored = write_unclean(&place.storage, &place.dir, &config, 10).await;
            let path = last_log_file(&place.dir);
            let position: usize = stored[..6].iter().map(Vec::len).sum::<usize>() + 200;
            let mut bytes = std::fs::read(&path).expect("read");
            bytes[position] ^= 0x40;
            std::fs::write(&path, &bytes).expect("write");
            let log = place.open(config, "reopen").await;
            let report = log.recovery_report();
            assert_eq!(report.truncated.len(), 1, "{kind}");
            assert!(
                report.truncated[0].reason.contains("CRC")
                    || report.truncated[0].reason.contains("crc"),
                "{kind}: {}",
                report.truncated[0].reason
            );
            assert_eq!(
                read_all(&log, 0, 1 << 20).await,
                stored[..6].to_vec(),
                "{kind}"
            );
        });
    }
}

#[test]
fn trailing_zeros_are_not_batches() {
    for kind in real_kinds() {
        run(async move {
            let place = place(kind);
            let config = crash_config(Durability::Always);
            let stored = write_unclean(&place.storage, &place.dir, &config, 5).await;
            let path = last_log_file(&place.dir);
            let len = std::fs::metadata(&path).expect("stat").len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .expect("open")
                .set_len(len + 10_000)
                .expect("extend");
            let log = place.open(config, "reopen").await;
            assert_eq!(read_all(&log, 0, 1 << 20).await, stored, "{kind}");
        });
    }
}

#[test]
fn damaged_or_missing_indexes_are_rebuilt() {
    for kind in real_kinds() {
        run(async move {
            let place = place(kind);
            let config = LogConfig {
                segment_bytes: 64 * 1024,
                ..crash_config(Durability::None)
            };
            let log = place.open(config.clone(), "open").await;
            let mut stored = Vec::new();
            for step in 0..60 {
                let batch = make_batch(5, 400, step, step as u64);
                let info = log.append(&batch, 0).await.expect("append");
                stored.push(as_stored(batch, info.base_offset, 0));
            }
            log.close().await.expect("close");
            let first_index = place.dir.join(format!("{:020}.index", 0));
            std::fs::write(&first_index, [1, 2, 3]).expect("damage index");
            let bases = log.segment_base_offsets();
            let time_index = place.dir.join(format!("{:020}.timeindex", bases[1]));
            std::fs::remove_file(&time_index).expect("remove time index");
            let reopened = place.open(config, "reopen").await;
            assert_eq!(reopened.recovery_report().indexes_rebuilt, 2, "{kind}");
            assert_eq!(read_all(&reopened, 0, 1 << 20).await, stored, "{kind}");
            for batch in &stored {
                let offset = base_offset(batch);
                let regions = reopened.read(offset, 1).await.expect("read");
                let bytes = regions[0].read_bytes().await.expect("bytes");
                assert_eq!(&bytes, batch, "{kind}: offset {offset}");
            }
        });
    }
}

#[test]
fn corruption_inside_a_sealed_segment_drops_the_segments_after_it() {
    for kind in real_kinds() {
        run(async move {
            let place = place(kind);
            let config = LogConfig {
                segment_bytes: 32 * 1024,
                ..crash_config(Durability::None)
            };
            let log = place.open(config.clone(), "open").await;
            let mut stored = Vec::new();
            for step in 0..40 {
                let batch = make_batch(5, 400, step, step as u64);
                let info = log.append(&batch, 0).await.expect("append");
                stored.push(as_stored(batch, info.base_offset, 0));
            }
            // The second segment's seal writes its last partial page again: let it finish, or
            // that write could land after the corruption below and undo it.
            while log.seals_in_flight() > 0 {
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
            drop(log);
            let bases = common_bases(&place.dir);
            let second = place.dir.join(format!("{:020}.log", bases[1]));
            // The last byte of the segment's last batch. Not the file's last byte: the log was
            // dropped with the segment's seal (which trims it) perhaps still in the background.
            let data_len: usize = stored
                .iter()
                .filter(|batch| (bases[1]..bases[2]).contains(&base_offset(batch)))
                .map(Vec::len)
                .sum();
            let mut bytes = std::fs::read(&second).expect("read");
            let last = data_len - 1;
            bytes[last] ^= 1;
            std::fs::write(&second, &bytes).expect("write");
            let reopened = place.open(config, "reopen").await;
            let report = reopened.recovery_report();
            assert!(report.segments_dropped >= 1, "{kind}: {report:?}");
            let recovered = read_all(&reopened, 0, 1 << 20).await;
            assert!(recovered.len() < stored.len());
            assert_eq!(recovered[..], stored[..recovered.len()], "{kind}");
        });
    }
}

fn common_bases(dir: &Path) -> Vec<i64> {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            shardlog_storage::segment::SegmentPaths::parse_log_name(&name)
        })
        .collect();
    bases.sort();
    bases
}

/// The batches a poisoned log still serves, read from offset 0 until it returns nothing.
async fn read_all_written(log: &PartitionLog) -> Vec<Vec<u8>> {
    let mut offset = 0;
    let mut batches = Vec::new();
    loop {
        let regions = log
            .read(offset, 1 << 20)
            .await
            .expect("read what was written");
        let Some(region) = regions.first() else { break };
        let bytes = region.read_bytes().await.expect("bytes");
        for batch in common::split_batches(&bytes) {
            offset = batch::validate(&batch, usize::MAX)
                .expect("valid")
                .last_offset()
                + 1;
            batches.push(batch);
        }
    }
    batches
}
