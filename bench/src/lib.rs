//! Shared setup for the criterion benches (`benches/batch.rs`, `append.rs`, `read.rs`).
//!
//! Everything here runs outside the timed regions: building record batches of exact sizes,
//! a seeded random number generator, the glommio executor, and logs in throwaway directories.
//!
//! **Where logs live.** Under `$SHARDLOG_BENCH_DIR` if set, else under the directory the bench
//! passes in (cargo's `CARGO_TARGET_TMPDIR`, i.e. `target/tmp`). It must be a real file system
//! that supports O_DIRECT and fallocate, so not tmpfs. Each [`TempLog`] gets its own directory,
//! removed when it is dropped.

use std::path::{Path, PathBuf};

use glommio::{LocalExecutor, LocalExecutorBuilder};
use shardlog_storage::batch::{BatchBuilder, Compression};
use shardlog_storage::runtime::IO_MEMORY_BYTES_DEFAULT;
use shardlog_storage::{Durability, LogConfig, PartitionLog, Storage, StrategyKind};

pub const KIB: usize = 1 << 10;
pub const MIB: usize = 1 << 20;

/// Value bytes of a full record: with its 12-byte key and framing, a record is about 1 KiB.
pub const RECORD_VALUE_BYTES: usize = 1000;

/// Segment size of every bench log: 256 MiB, so long runs roll now and then but rarely.
pub const SEGMENT_BYTES: u64 = 256 << 20;

/// Base timestamp of every record batch (an arbitrary instant in 2023).
const BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;

/// Distinct byte values in record values: 16 letters carry 4 bits of entropy per byte, so
/// zstd (level 3) shrinks a batch of them about 1.9x, a middling ratio for real payloads.
const VALUE_ALPHABET: &[u8; 16] = b"abcdefghijklmnop";

/// Attempts at sizing the last record before [`builder_for_bytes`] gives up on an exact fit.
const FIT_ATTEMPTS_MAX: usize = 8;

/// A small, seeded, deterministic generator (SplitMix64): enough for random targets and
/// record contents, and every run of a bench sees the same sequence.
#[derive(Clone, Debug)]
pub struct BenchRng {
    state: u64,
}

impl BenchRng {
    pub fn new(seed: u64) -> BenchRng {
        BenchRng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// A number in `[0, bound)`; `bound` must be positive. The modulo bias is irrelevant at
    /// the bounds used here.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "empty range");
        self.next_u64() % bound
    }
}

/// A builder holding records of about 1 KiB (the last one sized to fit) whose *uncompressed* batch
/// is exactly `batch_bytes` long, for `compression` to encode at `build`.
///
/// # Panics
/// If `batch_bytes` cannot hold a batch header and one ~1 KiB record, or no exact fit is
/// found within [`FIT_ATTEMPTS_MAX`] builds (a bug here).
pub fn builder_for_bytes(batch_bytes: usize, compression: Compression) -> BatchBuilder {
    let full_only = |records: usize| {
        batch_len(&fill_builder(
            records,
            RECORD_VALUE_BYTES,
            Compression::None,
        ))
    };
    // Measure one full record's encoded size from two builds instead of restating the format.
    let bare_bytes = full_only(1);
    let record_bytes = full_only(2) - bare_bytes;
    let header_bytes = bare_bytes - record_bytes;
    assert!(
        batch_bytes >= header_bytes + record_bytes,
        "a {batch_bytes}-byte batch cannot hold one ~1 KiB record"
    );
    // Offset and timestamp deltas widen as records are added, so the count is corrected from
    // real builds: a difference of half a record or more changes the count, a smaller one the
    // last record's value. That value then stays within half a record of full size, where
    // every varint in the record keeps its width.
    let mut records = (batch_bytes - header_bytes) / record_bytes;
    let mut last_value_bytes = RECORD_VALUE_BYTES;
    for _ in 0..FIT_ATTEMPTS_MAX {
        let built_bytes = batch_len(&fill_builder(records, last_value_bytes, Compression::None));
        if built_bytes == batch_bytes {
            return fill_builder(records, last_value_bytes, compression);
        }
        let wanted_value_bytes = (last_value_bytes + batch_bytes) as i64 - built_bytes as i64;
        let off_by_bytes = wanted_value_bytes - RECORD_VALUE_BYTES as i64;
        let half_record_bytes = record_bytes as i64 / 2;
        // Rounded half away from zero: within half a record, no record is added or removed.
        let extra_records =
            (off_by_bytes + off_by_bytes.signum() * half_record_bytes) / record_bytes as i64;
        if extra_records == 0 {
            last_value_bytes = wanted_value_bytes as usize;
        } else {
            records = (records as i64 + extra_records).max(1) as usize;
            last_value_bytes = RECORD_VALUE_BYTES;
        }
    }
    panic!("no exact fit for a {batch_bytes}-byte batch of ~1 KiB records");
}

/// An uncompressed batch of ~1 KiB records, exactly `batch_bytes` long, base offset 0, as a
/// producer would send it.
pub fn batch_of_bytes(batch_bytes: usize) -> Vec<u8> {
    let batch = builder_for_bytes(batch_bytes, Compression::None)
        .build(0)
        .expect("bench records encode");
    assert_eq!(batch.len(), batch_bytes);
    batch
}

/// `records` records keyed `key-<index>`, the last one with a `last_value_bytes` value and
/// the others with [`RECORD_VALUE_BYTES`]. Each value is drawn afresh (seeded by the record's
/// index), so zstd finds no record repeated.
fn fill_builder(records: usize, last_value_bytes: usize, compression: Compression) -> BatchBuilder {
    let mut builder = BatchBuilder::new(BASE_TIMESTAMP_MS, compression);
    for index in 0..records {
        let key = format!("key-{index:08}");
        let value_bytes = if index + 1 == records {
            last_value_bytes
        } else {
            RECORD_VALUE_BYTES
        };
        let value = random_letters(&mut BenchRng::new(index as u64), value_bytes);
        builder.push_kv(
            Some(key.as_bytes()),
            Some(&value),
            &[],
            BASE_TIMESTAMP_MS + index as i64,
        );
    }
    builder
}

fn batch_len(builder: &BatchBuilder) -> usize {
    builder.build(0).expect("bench records encode").len()
}

/// `bytes` letters from [`VALUE_ALPHABET`], drawn from `rng`.
fn random_letters(rng: &mut BenchRng, bytes: usize) -> Vec<u8> {
    (0..bytes)
        .map(|_| VALUE_ALPHABET[rng.below(VALUE_ALPHABET.len() as u64) as usize])
        .collect()
}

/// The directory bench logs go under: `$SHARDLOG_BENCH_DIR`, else `default_root` (pass
/// `env!("CARGO_TARGET_TMPDIR")`, which only bench targets see). Created if missing.
///
/// # Panics
/// If the directory cannot be created.
pub fn bench_root(default_root: &str) -> PathBuf {
    let root = std::env::var_os("SHARDLOG_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default_root));
    std::fs::create_dir_all(&root)
        .unwrap_or_else(|error| panic!("cannot create bench dir {}: {error}", root.display()));
    root
}

/// A glommio executor on this thread, meant to be made once per benchmark and given one
/// `run` per criterion sample. `IO_MEMORY_BYTES_DEFAULT` of DMA memory fits the common 8 MiB
/// memlock limit (larger buffers fall back to ordinary aligned allocations).
///
/// # Panics
/// If io_uring is unavailable or memlock is too low.
pub fn executor() -> LocalExecutor {
    LocalExecutorBuilder::default()
        .io_memory(IO_MEMORY_BYTES_DEFAULT)
        .make()
        .unwrap_or_else(|error| {
            panic!("cannot start a glommio executor ({error}): io_uring and memlock needed")
        })
}

/// The bench log settings: Kafka defaults, except 256 MiB segments, preallocated.
pub fn log_config(durability: Durability) -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        preallocate: true,
        durability,
        ..LogConfig::default()
    }
}

/// A partition log in a fresh directory under `root`; dropping it removes the directory.
///
/// Drop it inside the executor that opened it: the strategies close their files there.
pub struct TempLog {
    pub log: PartitionLog,
    // Declared after `log` so the files close before their directory goes.
    _dir: tempfile::TempDir,
}

impl TempLog {
    /// Opens an empty log with strategy `kind` and `config`.
    ///
    /// # Panics
    /// If the directory cannot be made or the log cannot be opened.
    pub async fn open(kind: StrategyKind, root: &Path, config: LogConfig) -> TempLog {
        let dir = tempfile::Builder::new()
            .prefix("shardlog-bench-")
            .tempdir_in(root)
            .unwrap_or_else(|error| {
                panic!("cannot make a temp dir in {}: {error}", root.display())
            });
        let log = PartitionLog::open(Storage::new(kind), &dir.path().join("topic-0"), config)
            .await
            .unwrap_or_else(|error| panic!("cannot open a {kind} log: {error}"));
        TempLog { log, _dir: dir }
    }
}

/// A human label for a size in bytes: `4KiB`, `64KiB`, `1MiB`.
pub fn size_label(bytes: usize) -> String {
    // Masks, not `%`: both units are powers of two, and `is_multiple_of` postdates the MSRV.
    if bytes >= MIB && bytes & (MIB - 1) == 0 {
        format!("{}MiB", bytes / MIB)
    } else if bytes >= KIB && bytes & (KIB - 1) == 0 {
        format!("{}KiB", bytes / KIB)
    } else {
        format!("{bytes}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_have_the_exact_size_and_validate() {
        for batch_bytes in [4 * KIB, 16 * KIB, 64 * KIB, MIB] {
            let batch = batch_of_bytes(batch_bytes);
            let header = shardlog_storage::batch::validate(&batch, usize::MAX).expect("valid");
            assert_eq!(header.total_bytes(), batch_bytes);
        }
    }

    #[test]
    fn zstd_batches_decode_to_the_same_records() {
        let plain = builder_for_bytes(64 * KIB, Compression::None)
            .build(0)
            .unwrap();
        let packed = builder_for_bytes(64 * KIB, Compression::Zstd)
            .build(0)
            .unwrap();
        assert!(packed.len() < plain.len());
        let decode =
            |batch: &[u8]| shardlog_storage::batch::decode_records(batch, 8 * MIB).unwrap();
        assert_eq!(decode(&plain), decode(&packed));
    }
}
