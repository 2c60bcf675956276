//! CPU cost of the batch and index code on the produce and fetch paths, no I/O:
//!
//! - `crc32c/<size>`: the checksum alone, over random bytes.
//! - `validate/<size>`: [`batch::validate`] of a batch of ~1 KiB records (header checks + CRC),
//!   which the broker runs on every produced batch.
//! - `patch_offsets/64KiB`: [`batch::patch_base_offset`] + [`batch::patch_partition_leader_epoch`],
//!   the only bytes the broker writes into a batch. The cost does not depend on the batch size;
//!   the throughput says how many bytes of 64 KiB batches per second the stamping keeps up with.
//! - `zstd/encode/1MiB`, `zstd/decode/1MiB`: [`BatchBuilder::build`] with zstd of ~1 MiB of
//!   records already pushed, and [`batch::decode_records`] of the result. Throughput counts
//!   the uncompressed batch bytes.
//! - `offset_index/lookup/262144`: [`OffsetIndex::lookup`] in the index of a full 1 GiB segment
//!   (one entry per 4 KiB) at random targets. Reported in lookups per second, not bytes:
//!   a lookup does not touch log bytes.
//!
//! Timing defaults (overridable on the command line): 1 s warm-up, 2 s measurement, 50 samples.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardlog_bench::{batch_of_bytes, builder_for_bytes, size_label, BenchRng, KIB, MIB};
use shardlog_storage::batch::{self, Compression};
use shardlog_storage::index::OffsetIndex;

const SIZES_BYTES: [usize; 3] = [4 * KIB, 64 * KIB, MIB];

/// A 1 GiB segment indexed every 4 KiB.
const INDEX_ENTRIES: u32 = 262_144;
const INDEX_INTERVAL_BYTES: u32 = 4096;
/// ~1 KiB records: about four per index interval.
const RECORDS_PER_INDEX_ENTRY: u32 = 4;
/// Random lookup targets cycled through (a power of two, so the cycling is a mask).
const TARGETS_COUNT: usize = 4096;

/// The cap `decode_records` is given: well above the ~1 MiB the bench batch expands to.
const DECOMPRESSED_BYTES_MAX: usize = 8 * MIB;

fn crc32c(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("crc32c");
    let mut rng = BenchRng::new(1);
    for size_bytes in SIZES_BYTES {
        let data: Vec<u8> = (0..size_bytes).map(|_| rng.next_u64() as u8).collect();
        group.throughput(Throughput::Bytes(size_bytes as u64));
        group.bench_function(size_label(size_bytes), |bencher| {
            bencher.iter(|| crc32c::crc32c(black_box(&data)))
        });
    }
    group.finish();
}

fn validate(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("validate");
    for size_bytes in SIZES_BYTES {
        let batch = batch_of_bytes(size_bytes);
        group.throughput(Throughput::Bytes(size_bytes as u64));
        group.bench_function(size_label(size_bytes), |bencher| {
            bencher.iter(|| batch::validate(black_box(&batch), usize::MAX).expect("valid batch"))
        });
    }
    group.finish();
}

fn patch_offsets(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("patch_offsets");
    let size_bytes = 64 * KIB;
    let mut batch = batch_of_bytes(size_bytes);
    let mut base_offset = 0i64;
    group.throughput(Throughput::Bytes(size_bytes as u64));
    group.bench_function(size_label(size_bytes), |bencher| {
        bencher.iter(|| {
            base_offset += 64;
            let batch = black_box(batch.as_mut_slice());
            batch::patch_base_offset(batch, black_box(base_offset));
            batch::patch_partition_leader_epoch(batch, black_box(7));
        })
    });
    group.finish();
    assert!(
        batch::validate(&batch, usize::MAX).is_ok(),
        "patching keeps the CRC valid"
    );
}

fn zstd(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("zstd");
    let size_bytes = MIB;
    let builder = builder_for_bytes(size_bytes, Compression::Zstd);
    let packed = builder.build(0).expect("zstd batch encodes");
    eprintln!(
        "zstd: {} uncompressed bytes -> {} bytes ({:.2}x)",
        size_bytes,
        packed.len(),
        size_bytes as f64 / packed.len() as f64
    );
    group.throughput(Throughput::Bytes(size_bytes as u64));
    group.bench_function(format!("encode/{}", size_label(size_bytes)), |bencher| {
        bencher.iter(|| black_box(&builder).build(0).expect("zstd batch encodes"))
    });
    group.bench_function(format!("decode/{}", size_label(size_bytes)), |bencher| {
        bencher.iter(|| {
            batch::decode_records(black_box(&packed), DECOMPRESSED_BYTES_MAX)
                .expect("zstd batch decodes")
        })
    });
    group.finish();
}

fn offset_index(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("offset_index");
    let mut index = OffsetIndex::default();
    for entry in 0..INDEX_ENTRIES {
        index.push(
            entry * RECORDS_PER_INDEX_ENTRY,
            entry * INDEX_INTERVAL_BYTES,
        );
    }
    let mut rng = BenchRng::new(2);
    let relative_offset_end = u64::from(INDEX_ENTRIES * RECORDS_PER_INDEX_ENTRY);
    let targets: Vec<u32> = (0..TARGETS_COUNT)
        .map(|_| rng.below(relative_offset_end) as u32)
        .collect();
    let mut next = 0usize;
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("lookup/{INDEX_ENTRIES}"), |bencher| {
        bencher.iter(|| {
            next = (next + 1) & (TARGETS_COUNT - 1);
            black_box(&index).lookup(black_box(targets[next]))
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = crc32c, validate, patch_offsets, zstd, offset_index
}
criterion_main!(benches);
