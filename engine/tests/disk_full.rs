//! The real broker on a disk that fills up, with the real librdkafka client (issue 13, item
//! 5: a full disk used to kill the broker).
//!
//! The broker's data directory is a small file system mounted for the test (ext4 on a loop
//! device for the O_DIRECT strategies, tmpfs for `buffered`), with the default segment size
//! (bigger than the whole file system). The client fills it; produces must then be refused
//! with KAFKA_STORAGE_ERROR while the broker keeps running and serving every acknowledged
//! record; once the test's filler file is deleted, produces must succeed again.
//!
//! Mounting needs root. Without it these tests print why and pass without running (CI runs
//! as root).

mod common_broker;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common_broker::{clients_dir, require_tool, run_client, BrokerProcess};

/// Size of the file system the broker fills.
const FILESYSTEM_BYTES: u64 = 64 << 20;
/// A file written on it before the broker starts and deleted to give space back.
const FILLER_BYTES: usize = 20 << 20;
/// Longest the client script may run.
const CLIENT_RUN_MAX: Duration = Duration::from_secs(300);

/// A size-limited file system mounted in a temporary directory; unmounted when dropped.
struct SmallFilesystem {
    mount_point: PathBuf,
    _root: tempfile::TempDir,
}

impl SmallFilesystem {
    /// ext4 in an image file on a loop device (supports O_DIRECT), or why it cannot be had.
    fn ext4(bytes: u64) -> Result<SmallFilesystem, String> {
        let (root, mount_point) = SmallFilesystem::prepare()?;
        let image = root.path().join("disk.img");
        std::fs::File::create(&image)
            .and_then(|file| file.set_len(bytes))
            .map_err(|error| format!("cannot create the image: {error}"))?;
        run_tool("mkfs.ext4", &["-q", "-F", &image.display().to_string()])?;
        run_tool(
            "mount",
            &[
                "-o",
                "loop",
                &image.display().to_string(),
                &mount_point.display().to_string(),
            ],
        )?;
        Ok(SmallFilesystem {
            mount_point,
            _root: root,
        })
    }

    /// tmpfs of `bytes` (no O_DIRECT), or why it cannot be had.
    fn tmpfs(bytes: u64) -> Result<SmallFilesystem, String> {
        let (root, mount_point) = SmallFilesystem::prepare()?;
        run_tool(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes}"),
                "tmpfs",
                &mount_point.display().to_string(),
            ],
        )?;
        Ok(SmallFilesystem {
            mount_point,
            _root: root,
        })
    }

    fn prepare() -> Result<(tempfile::TempDir, PathBuf), String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("mounting a small file system needs root".to_string());
        }
        let root = tempfile::Builder::new()
            .prefix("disk-full-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .map_err(|error| format!("temporary directory: {error}"))?;
        let mount_point = root.path().join("mnt");
        std::fs::create_dir(&mount_point).map_err(|error| format!("mount point: {error}"))?;
        Ok((root, mount_point))
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        // Lazy: a broker killed a moment ago may still hold files open.
        let _ = run_tool("umount", &["-l", &self.mount_point.display().to_string()]);
    }
}

fn run_tool(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| format!("{program}: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// Writes `bytes` of real data (no holes) at `path` and makes it durable.
fn write_filler(path: &Path, bytes: usize) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("create the filler");
    let block = vec![0x5a; 1 << 20];
    for _ in 0..bytes / block.len() {
        file.write_all(&block).expect("write the filler");
    }
    file.sync_all().expect("sync the filler");
}

/// Fills `filesystem` through a broker using `strategy` and checks the promises.
fn fill_and_recover(name: &str, strategy: &str, filesystem: Result<SmallFilesystem, String>) {
    let filesystem = match filesystem {
        Ok(filesystem) => filesystem,
        Err(why) => {
            eprintln!("skipped {name}: {why}");
            return;
        }
    };
    require_tool(
        "the Python module confluent_kafka",
        "python3",
        &["-c", "import confluent_kafka"],
    );
    let filler = filesystem.mount_point.join("filler");
    write_filler(&filler, FILLER_BYTES);
    let data_dir = filesystem.mount_point.join("data");
    let mut broker = BrokerProcess::start_with_data_dir(name, &["--strategy", strategy], &data_dir);
    let mut command = Command::new("python3");
    command
        .arg(clients_dir().join("confluent_disk_full.py"))
        .args([&broker.bootstrap(), "filling", "4"])
        .arg(&filler);
    let summary = run_client(command, CLIENT_RUN_MAX);
    assert_eq!(summary["ok"], true, "{summary}");
    assert!(
        summary["refusals"]["KAFKA_STORAGE_ERROR"].as_u64() > Some(0),
        "{summary}"
    );
    broker.assert_running();
    broker.assert_logged(&["no space for log"]);
    let stopped = broker.stop();
    assert!(stopped.status.success(), "clean stop: {stopped:?}");
}

#[test]
fn a_full_ext4_disk_refuses_produces_and_recovers_direct() {
    fill_and_recover(
        "disk-full-direct",
        "direct",
        SmallFilesystem::ext4(FILESYSTEM_BYTES),
    );
}

#[test]
fn a_full_ext4_disk_refuses_produces_and_recovers_uring() {
    fill_and_recover(
        "disk-full-uring",
        "uring",
        SmallFilesystem::ext4(FILESYSTEM_BYTES),
    );
}

#[test]
fn a_full_tmpfs_refuses_produces_and_recovers_buffered() {
    fill_and_recover(
        "disk-full-buffered",
        "buffered",
        SmallFilesystem::tmpfs(FILESYSTEM_BYTES),
    );
}

/// Bytes the file system allocated to the files under `dir` (what `du` counts).
fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("entry");
        let metadata = entry.metadata().expect("metadata");
        total += if metadata.is_dir() {
            allocated_bytes(&entry.path())
        } else {
            metadata.blocks() * 512
        };
    }
    total
}

/// A few hundred partitions, each written once, with the default segment size: each reserves
/// its first step (1 MiB), not a segment (128 MiB, which for 300 partitions is 37.5 GiB).
#[test]
fn hundreds_of_partitions_do_not_reserve_a_segment_each() {
    const PARTITIONS: i32 = 300;
    const PER_PARTITION_BYTES_MAX: u64 = 2 << 20;
    let broker = BrokerProcess::start("many-partitions", &["--strategy", "direct"]);
    let mut client = broker.client();
    client.create_topic("many", PARTITIONS);
    for partition in 0..PARTITIONS {
        let batch = common_broker::test_batch(
            &format!("p{partition}"),
            3,
            shardlog::batch::Compression::None,
        );
        let answer = client.produce("many", partition, batch, -1);
        assert_eq!(answer.error_code, common_broker::error_code::NONE);
    }
    let mut largest = 0;
    for partition in 0..PARTITIONS {
        let dir = broker.data_dir().join(format!("many-{partition}"));
        largest = largest.max(allocated_bytes(&dir));
    }
    let total = allocated_bytes(&broker.data_dir());
    eprintln!("{PARTITIONS} partitions: {total} bytes allocated, at most {largest} per partition");
    assert!(
        largest <= PER_PARTITION_BYTES_MAX,
        "a partition holds {largest} bytes"
    );
    assert!(
        total <= PARTITIONS as u64 * PER_PARTITION_BYTES_MAX,
        "{total}"
    );
}
