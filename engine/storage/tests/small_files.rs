//! The small-file API on the simulated disk, where its faults reach it: a failed fdatasync or
//! directory fsync is reported, a crash before the rename is durable brings the old file back
//! (never a mix, never a torn file), and a crash at any step of a write leaves the old or the
//! new bytes.

mod common;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use common::run;
use shardlog_storage::storage::{SimDisk, SimFault, SimOp, Storage};

const OLD: &[u8] = b"epoch 4 starts at 100\n";
const NEW: &[u8] = b"epoch 4 starts at 100\nepoch 5 starts at 250\n";

fn dir() -> &'static Path {
    Path::new("/sim/partition")
}

fn file() -> PathBuf {
    dir().join("leader-epoch-checkpoint")
}

/// A disk holding `OLD` durably in `file()`.
async fn disk_with_old_file(seed: u64) -> (SimDisk, Storage) {
    let disk = SimDisk::new(seed);
    let storage = Storage::Sim(disk.clone());
    storage
        .write_file_atomic_off_thread(&file(), OLD.to_vec())
        .await
        .expect("first write");
    (disk, storage)
}

async fn turns(count: usize) {
    for _ in 0..count {
        futures_lite::future::yield_now().await;
    }
}

#[test]
fn a_failed_fdatasync_is_reported_and_the_old_file_survives() {
    run(async {
        for fault in [SimFault::Io, SimFault::NoSpace] {
            let (disk, storage) = disk_with_old_file(1).await;
            disk.fail_with(SimOp::Sync, Some(fault));
            let error = storage
                .write_file_atomic_off_thread(&file(), NEW.to_vec())
                .await
                .expect_err("the failed fdatasync is reported");
            assert!(error.to_string().contains("fdatasync"), "{error}");
            assert_eq!(disk.read_whole(&file(), 1024).as_deref(), Some(OLD));
            assert_eq!(
                disk.list(dir()),
                vec!["leader-epoch-checkpoint".to_string()],
                "the temporary copy is given back"
            );
            disk.fail_with(SimOp::Sync, None);
            disk.crash();
            assert_eq!(disk.read_whole(&file(), 1024).as_deref(), Some(OLD));
        }
    });
}

#[test]
fn a_failed_write_or_a_full_disk_leaves_the_old_file() {
    run(async {
        let (disk, storage) = disk_with_old_file(2).await;
        disk.fail_with(SimOp::Write, Some(SimFault::Io));
        assert!(storage
            .write_file_atomic_off_thread(&file(), NEW.to_vec())
            .await
            .is_err());
        disk.fail_with(SimOp::Write, None);
        disk.set_capacity(Some(disk.used_bytes() + 4));
        let error = storage
            .write_file_atomic_off_thread(&file(), NEW.to_vec())
            .await
            .expect_err("no room for the copy beside the old file");
        assert!(error.is_no_space(), "{error}");
        assert_eq!(disk.read_whole(&file(), 1024).as_deref(), Some(OLD));
        disk.set_capacity(None);
        storage
            .write_file_atomic_off_thread(&file(), NEW.to_vec())
            .await
            .expect("room again");
        disk.crash();
        assert_eq!(disk.read_whole(&file(), 1024).as_deref(), Some(NEW));
    });
}

/// A failed directory fsync is reported; the new bytes are visible but not durable, and a
/// crash finds the old file or the new one, whole.
#[test]
fn a_failed_directory_fsync_is_reported_and_a_crash_finds_one_file_whole() {
    run(async {
        let mut found = Vec::new();
        for seed in 0..16 {
            let (disk, storage) = disk_with_old_file(seed).await;
            disk.fail_with(SimOp::SyncDir, Some(SimFault::Io));
            let error = storage
                .write_file_atomic_off_thread(&file(), NEW.to_vec())
                .await
                .expect_err("the failed directory fsync is reported");
            assert!(error.to_string().contains("fsync"), "{error}");
            assert_eq!(disk.read_whole(&file(), 1024).as_deref(), Some(NEW));
            assert!(disk.name_is_volatile(&file()));
            disk.fail_with(SimOp::SyncDir, None);
            disk.crash();
            let after = disk.read_whole(&file(), 1024).expect("a file is there");
            assert!(after == OLD || after == NEW, "seed {seed}: {after:?}");
            found.push(after == OLD);
        }
        assert!(
            found.contains(&true) && found.contains(&false),
            "some crashes undo the rename, some keep it"
        );
    });
}

/// A crash while the write's fdatasync or directory fsync is held: the write fails, and the
/// disk holds the old bytes (or, once renamed, possibly the new ones), never anything else.
/// A file written for the first time is absent or whole.
#[test]
fn a_crash_at_any_step_leaves_the_old_bytes_or_the_new_ones() {
    run(async {
        let mut old_after_rename = false;
        for seed in 0..12 {
            for hold_directory in [false, true] {
                for first_write in [false, true] {
                    let disk = SimDisk::new(seed);
                    let storage = Storage::Sim(disk.clone());
                    if !first_write {
                        storage
                            .write_file_atomic_off_thread(&file(), OLD.to_vec())
                            .await
                            .expect("first write");
                    }
                    let held: PathBuf = if hold_directory {
                        dir().to_path_buf()
                    } else {
                        file()
                    };
                    disk.stall_syncs(&held, true);
                    let done = Rc::new(Cell::new(false));
                    let writing = {
                        let (storage, done) = (storage.clone(), Rc::clone(&done));
                        glommio::spawn_local(async move {
                            let written = storage
                                .write_file_atomic_off_thread(&file(), NEW.to_vec())
                                .await;
                            done.set(true);
                            written
                        })
                    };
                    turns(20).await;
                    assert!(!done.get(), "held at its sync");
                    let visible = disk.read_whole(&file(), 1024);
                    let expected_visible = if hold_directory {
                        Some(NEW)
                    } else if first_write {
                        None
                    } else {
                        Some(OLD)
                    };
                    assert_eq!(visible.as_deref(), expected_visible);
                    disk.crash();
                    disk.stall_syncs(&held, false);
                    assert!(writing.await.is_err(), "a crash interrupted it");
                    let after = disk.read_whole(&file(), 1024);
                    let old = if first_write { None } else { Some(OLD) };
                    if hold_directory {
                        assert!(
                            after.as_deref() == old || after.as_deref() == Some(NEW),
                            "seed {seed}: {after:?}"
                        );
                        old_after_rename |= after.as_deref() == old;
                    } else {
                        assert_eq!(after.as_deref(), old, "seed {seed}: not renamed yet");
                    }
                    assert!(
                        disk.list(dir())
                            .iter()
                            .all(|name| name == "leader-epoch-checkpoint"),
                        "the temporary file's name was never durable: {:?}",
                        disk.list(dir())
                    );
                }
            }
        }
        assert!(
            old_after_rename,
            "some crash undid a rename whose directory was not synced"
        );
    });
}

/// A spare's rename (`rename_off_thread`) is durable only after its directory fsync, which
/// can be held and failed like any other.
#[test]
fn a_rename_waits_for_its_directory_fsync() {
    run(async {
        let (disk, storage) = disk_with_old_file(3).await;
        let moved = dir().join("moved");
        disk.stall_syncs(dir(), true);
        let renaming = {
            let (storage, moved) = (storage.clone(), moved.clone());
            glommio::spawn_local(async move { storage.rename_off_thread(&file(), &moved).await })
        };
        turns(20).await;
        assert!(disk.name_is_volatile(&moved));
        disk.stall_syncs(dir(), false);
        renaming.await.expect("rename");
        assert!(!disk.name_is_volatile(&moved));
        disk.crash();
        assert_eq!(disk.read_whole(&moved, 1024).as_deref(), Some(OLD));
        assert_eq!(disk.read_whole(&file(), 1024), None);

        disk.fail_with(SimOp::SyncDir, Some(SimFault::Io));
        assert!(storage.rename_off_thread(&moved, &file()).await.is_err());
    });
}
