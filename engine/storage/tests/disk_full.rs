//! A full or failing device, on the simulated disk: ENOSPC and EIO from fallocate, write and
//! fdatasync. An append the device refuses fails with an error and is not acknowledged;
//! nothing acknowledged is lost (checked again after a crash); and appends succeed again
//! once the fault clears: at once when only the reservation failed, after `reopen` when a
//! write or sync failed.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{as_stored, make_batch, read_all, run};
use shardlog_storage::batch;
use shardlog_storage::storage::{SimDisk, SimFault, SimOp, Storage};
use shardlog_storage::{Durability, LogConfig, LogError, PartitionLog};

/// Small segments and steps, so a few hundred kilobytes cross rolls and reservations.
fn config(durability: Durability) -> LogConfig {
    LogConfig {
        segment_bytes: 256 * 1024,
        preallocate_step_bytes: 64 * 1024,
        chunk_bytes: 16 * 1024,
        write_behind_max: 3,
        durability,
        ..LogConfig::default()
    }
}

/// Checks that `log` runs contiguously from its start to its end and holds every batch of
/// `acknowledged` byte for byte, at its offset.
async fn assert_holds(log: &PartitionLog, acknowledged: &BTreeMap<i64, Vec<u8>>, context: &str) {
    let stored = read_all(log, log.log_start_offset(), 1 << 20).await;
    let mut next = log.log_start_offset();
    let mut by_offset = BTreeMap::new();
    for batch in stored {
        let header = batch::validate(&batch, usize::MAX).expect("valid stored batch");
        assert_eq!(header.base_offset, next, "{context}: offsets contiguous");
        next = header.last_offset() + 1;
        by_offset.insert(header.base_offset, batch);
    }
    for (offset, batch) in acknowledged {
        assert_eq!(
            by_offset.get(offset),
            Some(batch),
            "{context}: acknowledged batch at offset {offset} lost"
        );
    }
}

/// Appends one batch tagged `tag`; records it in `acknowledged` if the log acknowledged it.
async fn append_one(
    log: &PartitionLog,
    tag: u64,
    acknowledged: &mut BTreeMap<i64, Vec<u8>>,
) -> Result<(), LogError> {
    let batch = make_batch(3, 900, 0, tag);
    let info = log.append(&batch, 0).await?;
    let earlier = acknowledged.insert(info.base_offset, as_stored(batch, info.base_offset, 0));
    assert!(
        earlier.is_none(),
        "offset {} acknowledged twice",
        info.base_offset
    );
    Ok(())
}

/// The disk fills up: the reservation (or, after a roll, the old segment's index files) fails
/// with ENOSPC, the append is refused with `LogError::NoSpace` and nothing is appended, the
/// log is not failed, and the same log appends again once space is freed. Checked at
/// several capacities so the disk fills at different points of a segment and of a roll.
#[test]
fn a_full_disk_refuses_appends_cleanly_and_they_resume_when_space_returns() {
    for capacity_kib in [40u64, 200, 300, 520, 700] {
        run(async move {
            let context = format!("capacity {capacity_kib} KiB");
            let disk = SimDisk::new(capacity_kib);
            let storage = Storage::Sim(disk.clone());
            let dir = Path::new("/sim/full");
            let config = config(Durability::Always);
            disk.set_capacity(Some(capacity_kib * 1024));
            let log = PartitionLog::open(storage.clone(), dir, config.clone())
                .await
                .expect("open");
            let mut acknowledged = BTreeMap::new();
            let mut tag = 0;
            let refusal = loop {
                tag += 1;
                assert!(tag < 10_000, "{context}: the disk never filled");
                if let Err(error) = append_one(&log, tag, &mut acknowledged).await {
                    break error;
                }
            };
            assert!(
                matches!(&refusal, LogError::NoSpace { source, .. } if source.is_no_space()),
                "{context}: {refusal}"
            );
            assert!(
                !log.is_failed(),
                "{context}: nothing was written, nothing failed"
            );
            let end = log.log_end_offset();
            // Still full: refused again, and nothing moves.
            assert!(append_one(&log, 50_000, &mut acknowledged).await.is_err());
            assert_eq!(log.log_end_offset(), end, "{context}");
            assert_holds(&log, &acknowledged, &context).await;

            disk.set_capacity(None);
            for more in 0..40 {
                append_one(&log, 60_000 + more, &mut acknowledged)
                    .await
                    .unwrap_or_else(|error| panic!("{context}: after space returned: {error}"));
            }
            assert_holds(&log, &acknowledged, &context).await;
            drop(log);
            disk.crash();
            let reopened = PartitionLog::open(storage, dir, config)
                .await
                .expect("reopen");
            assert_holds(
                &reopened,
                &acknowledged,
                &format!("{context}, after a crash"),
            )
            .await;
        });
    }
}

/// The disk fills exactly when a roll's background seal writes the sealed segment's index
/// files. The failure is not lost, and it fails nothing: the log is not failed, appends are
/// refused with `NoSpace` while the index files cannot be written (each append tries them
/// again first), and once space is freed the next append writes them and goes on.
#[test]
fn index_files_a_background_seal_could_not_write_are_written_by_a_later_append() {
    run(async {
        let disk = SimDisk::new(5);
        let storage = Storage::Sim(disk.clone());
        let dir = Path::new("/sim/roll");
        let config = config(Durability::Always);
        let log = PartitionLog::open(storage.clone(), dir, config.clone())
            .await
            .expect("open");
        let mut acknowledged = BTreeMap::new();
        let batch_bytes = make_batch(3, 900, 0, 0).len() as u64;
        let mut tag = 0;
        while log.size_bytes() + batch_bytes <= config.segment_bytes {
            append_one(&log, tag, &mut acknowledged)
                .await
                .expect("append");
            tag += 1;
        }
        assert_eq!(log.segment_count(), 1);
        // Sealing trims the file to its data, and the disk holds no more than that.
        disk.set_capacity(Some(log.size_bytes()));
        let error = append_one(&log, 1000, &mut acknowledged)
            .await
            .expect_err("neither the index files nor the batch fit");
        assert!(matches!(error, LogError::NoSpace { .. }), "{error}");
        let index = dir.join(format!("{:020}.index", 0));
        let small = make_batch(1, 10, 0, 1001);
        for _ in 0..3 {
            let error = log.append(&small, 0).await.expect_err("still full");
            assert!(matches!(error, LogError::NoSpace { .. }), "{error}");
            assert!(!log.is_failed(), "missing index files lose nothing");
        }
        assert_eq!(log.segment_count(), 2, "the roll itself needed no space");
        assert_eq!(disk.file_len(&index), None, "the index files did not fit");
        assert_holds(&log, &acknowledged, "full at the roll").await;
        disk.set_capacity(None);
        let info = log
            .append(&small, 0)
            .await
            .expect("the small batch, after space returned");
        acknowledged.insert(info.base_offset, as_stored(small, info.base_offset, 0));
        assert!(
            disk.file_len(&index).is_some(),
            "the append wrote the index files first"
        );
        for more in 0..20 {
            append_one(&log, 2000 + more, &mut acknowledged)
                .await
                .expect("append after space returned");
        }
        assert_eq!(log.segment_count(), 2);
        assert_holds(&log, &acknowledged, "after the roll").await;
        drop(log);
        disk.crash();
        let recovered = PartitionLog::open(storage, dir, config)
            .await
            .expect("open after a crash");
        assert_holds(&recovered, &acknowledged, "after a crash").await;
        assert_eq!(
            recovered.recovery_report().indexes_rebuilt,
            1,
            "only the active segment"
        );
    });
}

/// One fault at one operation, with `Always` durability: the append that meets it fails and
/// is not acknowledged; later appends fail too while the fault lasts; what was acknowledged
/// stays readable; once the fault clears, appends succeed (after `reopen` if a write or sync
/// failed); and a crash afterwards loses nothing acknowledged, before or after the fault.
fn one_fault(op: SimOp, fault: SimFault) {
    run(async move {
        let context = format!("{fault:?} at {op:?}");
        let disk = SimDisk::new(11);
        let storage = Storage::Sim(disk.clone());
        let dir = Path::new("/sim/fault");
        let config = config(Durability::Always);
        let mut log = PartitionLog::open(storage.clone(), dir, config.clone())
            .await
            .expect("open");
        let mut acknowledged = BTreeMap::new();
        // 70 batches of about 2.7 KiB: past a roll and several reservations.
        for tag in 0..70 {
            append_one(&log, tag, &mut acknowledged)
                .await
                .expect("append before the fault");
        }
        disk.fail_with(op, Some(fault));
        // Enough appends that one of them needs a reservation (64 KiB steps).
        let mut refused = 0;
        for tag in 100..140 {
            if append_one(&log, tag, &mut acknowledged).await.is_err() {
                refused += 1;
            }
        }
        assert!(refused > 0, "{context}: the fault was never met");
        let failed = log.is_failed();
        assert_eq!(failed, op != SimOp::Preallocate, "{context}");
        let error = append_one(&log, 200, &mut acknowledged)
            .await
            .expect_err("refused while the fault lasts");
        if fault == SimFault::NoSpace && op == SimOp::Preallocate {
            assert!(
                matches!(error, LogError::NoSpace { .. }),
                "{context}: {error}"
            );
        }
        assert_holds_written(&log, &acknowledged, &context).await;

        disk.fail_with(op, None);
        if failed {
            let error = append_one(&log, 300, &mut acknowledged)
                .await
                .expect_err("a failed log takes no appends until reopened");
            assert!(error.to_string().contains("refuses writes"), "{error}");
            log = log.reopen().await.expect("reopen after the fault");
            assert!(!log.is_failed());
            assert_holds(&log, &acknowledged, &format!("{context}, reopened")).await;
        }
        for tag in 400..480 {
            append_one(&log, tag, &mut acknowledged)
                .await
                .unwrap_or_else(|error| panic!("{context}: after the fault cleared: {error}"));
        }
        assert_holds(&log, &acknowledged, &context).await;
        drop(log);
        disk.crash();
        let recovered = PartitionLog::open(storage, dir, config)
            .await
            .expect("open after a crash");
        assert_holds(
            &recovered,
            &acknowledged,
            &format!("{context}, after a crash"),
        )
        .await;
    });
}

/// Like [`assert_holds`] for a log whose active segment may have failed: reads then stop at
/// the last byte known written, so the log end is not reached; every acknowledged batch is
/// below it.
async fn assert_holds_written(
    log: &PartitionLog,
    acknowledged: &BTreeMap<i64, Vec<u8>>,
    context: &str,
) {
    let mut offset = log.log_start_offset();
    let mut readable = BTreeMap::new();
    loop {
        let regions = log.read(offset, 1 << 20).await.expect("read");
        let Some(region) = regions.first() else { break };
        let bytes = region.read_bytes().await.expect("bytes");
        for batch in common::split_batches(&bytes) {
            let header = batch::validate(&batch, usize::MAX).expect("valid");
            offset = header.last_offset() + 1;
            readable.insert(header.base_offset, batch);
        }
        if offset >= log.log_end_offset() {
            break;
        }
    }
    for (offset, batch) in acknowledged {
        assert_eq!(
            readable.get(offset),
            Some(batch),
            "{context}: acknowledged batch at {offset} not readable"
        );
    }
}

#[test]
fn no_space_at_fallocate() {
    one_fault(SimOp::Preallocate, SimFault::NoSpace);
}

#[test]
fn io_error_at_fallocate() {
    one_fault(SimOp::Preallocate, SimFault::Io);
}

#[test]
fn no_space_at_write() {
    one_fault(SimOp::Write, SimFault::NoSpace);
}

#[test]
fn io_error_at_write() {
    one_fault(SimOp::Write, SimFault::Io);
}

#[test]
fn no_space_at_fsync() {
    one_fault(SimOp::Sync, SimFault::NoSpace);
}

#[test]
fn io_error_at_fsync() {
    one_fault(SimOp::Sync, SimFault::Io);
}

/// Concurrent producers with `Always` durability while a seeded fault comes and goes: each
/// round, a fault (operation and kind by seed) is set after a seeded number of scheduler
/// turns and cleared after the producers stop; a failed log is reopened; at the end the disk
/// crashes. Every acknowledged batch must survive, byte for byte, at its offset.
#[test]
fn faults_that_come_and_go_under_concurrent_appends_lose_nothing_acknowledged() {
    let seeds: u64 = std::env::var("SHARDLOG_FAULT_SEEDS")
        .ok()
        .and_then(|seeds| seeds.parse().ok())
        .unwrap_or(24);
    for seed in 0..seeds {
        run(faults_come_and_go(seed));
    }
}

async fn faults_come_and_go(seed: u64) {
    let ops = [SimOp::Preallocate, SimOp::Write, SimOp::Sync];
    let faults = [SimFault::NoSpace, SimFault::Io];
    let disk = SimDisk::new(seed);
    let storage = Storage::Sim(disk.clone());
    let dir = Path::new("/sim/flaky");
    let config = LogConfig {
        commit_mode: common::alternating_commit_mode(seed),
        ..config(Durability::Always)
    };
    let mut log = PartitionLog::open(storage.clone(), dir, config.clone())
        .await
        .expect("open");
    let acknowledged = std::rc::Rc::new(std::cell::RefCell::new(BTreeMap::new()));
    for round in 0..5u64 {
        let context = format!("seed {seed} round {round}");
        let op = ops[((seed + round) % 3) as usize];
        let fault = faults[((seed / 3 + round) % 2) as usize];
        let shared_log = std::rc::Rc::new(log.clone());
        let producers: Vec<_> = (0..4u64)
            .map(|producer| {
                let log = std::rc::Rc::clone(&shared_log);
                let acknowledged = std::rc::Rc::clone(&acknowledged);
                glommio::spawn_local(async move {
                    for step in 0..30u64 {
                        let tag = seed * 100_000 + round * 1000 + producer * 100 + step;
                        let batch = make_batch(2, 700 + (tag % 5) as usize * 300, 0, tag);
                        match log.append(&batch, 0).await {
                            Ok(info) => {
                                let stored = as_stored(batch, info.base_offset, 0);
                                let earlier =
                                    acknowledged.borrow_mut().insert(info.base_offset, stored);
                                assert!(
                                    earlier.is_none(),
                                    "offset {} given twice",
                                    info.base_offset
                                );
                            }
                            Err(_) => break,
                        }
                    }
                })
            })
            .collect();
        for _ in 0..(seed * 7 + round * 13) % 80 + 1 {
            futures_lite::future::yield_now().await;
        }
        disk.fail_with(op, Some(fault));
        for producer in producers {
            producer.await;
        }
        disk.fail_with(op, None);
        if log.is_failed() {
            log = log.reopen().await.expect("reopen once the fault cleared");
        }
        let so_far = acknowledged.borrow().clone();
        assert_holds(&log, &so_far, &context).await;
    }
    drop(log);
    disk.crash();
    let recovered = PartitionLog::open(storage, dir, config)
        .await
        .expect("open after a crash");
    let context = format!("seed {seed}, after a crash");
    let all = acknowledged.borrow().clone();
    assert_holds(&recovered, &all, &context).await;
}
