#!/usr/bin/env bash
# Measures this machine's disk limit with fio and shardlog's append throughput in the same run,
# and prints the ratio per storage strategy (issue 2's targets):
#   1. 1 MiB appends, no fsync, 1 appender   vs  fio O_DIRECT sequential write, 1 MiB, iodepth 16
#   2. 64 KiB appends, 16 appenders: durability always (group commit) vs none, and vs fio's
#      closest pattern (64 KiB O_DIRECT writes, iodepth 16, fdatasync every 16 writes, file
#      preallocated to its size as segments are): what the device allows with that many fsyncs
#      and the device's best for 1 MiB per fsync (what 16 appenders of 64 KiB can have
#      outstanding): 1 MiB writes, one at a time, each followed by fdatasync, overwriting a
#      written file; divided by the engine's none, that is the most always / none can be here
#   3. the same in steady state (direct and uring): retention on (STEADY_SEGMENT segments,
#      STEADY_RETENTION kept), so rolls overwrite recycled segment files, vs fio's pattern 2
#      overwriting an already-written file; and direct with recycling off, for comparison
# Ratios 2 and 3 compare always and none measured in this one run. fio runs before and after
# the engine, and ratio 1 uses their mean, because this machine is shared and its disk speed
# drifts. Results go to $OUT (default results/<date>-disk-vs-engine/), each harness run's
# folder under $OUT/runs/.
#
# Usage: scripts/disk-vs-engine.sh   (DURATION=10s SIZE=4G DATA_DIR=target/disk-vs-engine
#                                     STEADY_SEGMENT=256MiB STEADY_RETENTION=1GiB STEADY_WARMUP=4s)
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-10s}
size=${SIZE:-4G}
data_dir=${DATA_DIR:-target/disk-vs-engine}
steady_segment=${STEADY_SEGMENT:-256MiB}
steady_retention=${STEADY_RETENTION:-1GiB}
# Long enough to write past the retention limit, so the spares are in use when measuring.
steady_warmup=${STEADY_WARMUP:-4s}
out=${OUT:-"results/$(date +%F)-disk-vs-engine"}
mkdir -p "$data_dir" "$out"
command -v fio >/dev/null || { echo "fio is missing: apt-get install fio" >&2; exit 1; }

cargo build --release -q -p shardlog-harness
harness=${CARGO_TARGET_DIR:-target}/release/harness

fio_mb_s() { # $1 = name, then fio options; prints MB/s
  local name=$1; shift
  fio --name="$name" --filename="$data_dir/fio.dat" --size="$size" --bs=1M --rw=write \
      --output-format=json "$@" >"$out/fio-$name.json"
  rm -f "$data_dir/fio.dat"
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["write"]["bw_bytes"]/1e6)' \
      "$out/fio-$name.json"
}

fio_overwrite_mb_s() { # $1 = name, then fio options; writes the file once, measures a rewrite
  local name=$1; shift
  fio --name="$name-first" --filename="$data_dir/fio.dat" --size="$size" --bs=1M --rw=write \
      --direct=1 --ioengine=io_uring --iodepth=16 --fallocate=native --output-format=json \
      >/dev/null
  fio_mb_s "$name" "$@"
}

engine() { # $1 = file name, then harness options; writes one JSON line per strategy
  local name=$1; shift
  "$harness" --data-dir "$data_dir/engine" --duration "$duration" --warmup "${warmup:-2s}" \
      --results-dir "$out/runs" --json "$@" >"$out/engine-$name.jsonl"
}

steady() { # like engine, with retention on: the log is in its steady state
  warmup=$steady_warmup engine "$@" --segment-bytes "$steady_segment" \
      --retention-bytes "$steady_retention"
}

echo "fio: O_DIRECT, io_uring, 1 MiB, iodepth 16 (before)" >&2
fio_direct_before=$(fio_mb_s direct-before --direct=1 --ioengine=io_uring --iodepth=16)
echo "fio: buffered pwrite, 1 MiB, fsync at end (before)" >&2
fio_buffered=$(fio_mb_s buffered --direct=0 --ioengine=psync --end_fsync=1)
echo "fio: O_DIRECT, io_uring, 64 KiB, iodepth 16, fdatasync every 16 writes" >&2
fio_group=$(fio_mb_s group-commit --bs=64k --direct=1 --ioengine=io_uring --iodepth=16 --fdatasync=16 --fallocate=native)
echo "fio: the same, overwriting a file written before (what recycled segments see)" >&2
fio_group_overwrite=$(fio_overwrite_mb_s group-commit-overwrite --bs=64k --direct=1 --ioengine=io_uring --iodepth=16 --fdatasync=16 --fallocate=native)
echo "fio: 1 MiB writes, one at a time, fdatasync after each, overwriting a written file" >&2
fio_sync_each=$(fio_overwrite_mb_s sync-each-1MiB-overwrite --direct=1 --ioengine=io_uring --iodepth=1 --fdatasync=1 --fallocate=native)

echo "engine: 1 MiB appends, durability none, 1 appender" >&2
engine append-1MiB-none --strategy direct,buffered,uring --durability none --append-bytes 1MiB --appenders 1
echo "engine: 64 KiB appends, 16 appenders, durability none" >&2
engine append-64KiB-x16-none --strategy direct,buffered,uring --durability none --append-bytes 64KiB --appenders 16
echo "engine: 64 KiB appends, 16 appenders, durability always" >&2
engine append-64KiB-x16-always --strategy direct,buffered,uring --durability always --append-bytes 64KiB --appenders 16

echo "engine, steady state ($steady_segment segments, $steady_retention retained): 64 KiB x16, none, then always" >&2
steady steady-64KiB-x16-none --strategy direct,uring --durability none --append-bytes 64KiB --appenders 16
steady steady-64KiB-x16-always --strategy direct,uring --durability always --append-bytes 64KiB --appenders 16
echo "engine, steady state without recycling: direct, none, then always" >&2
steady steady-norecycle-64KiB-x16-none --strategy direct --durability none --append-bytes 64KiB --appenders 16 --no-recycle
steady steady-norecycle-64KiB-x16-always --strategy direct --durability always --append-bytes 64KiB --appenders 16 --no-recycle

echo "fio: O_DIRECT, io_uring, 1 MiB, iodepth 16 (after)" >&2
fio_direct_after=$(fio_mb_s direct-after --direct=1 --ioengine=io_uring --iodepth=16)
rm -rf "$data_dir"

python3 - "$out" "$fio_direct_before" "$fio_direct_after" "$fio_buffered" "$fio_group" \
    "$fio_group_overwrite" "$steady_segment" "$steady_retention" "$fio_sync_each" <<'PY'
import json, sys, pathlib, datetime
out, before, after, buffered, group, overwrite = pathlib.Path(sys.argv[1]), *map(float, sys.argv[2:7])
steady_segment, steady_retention = sys.argv[7:9]
sync_each = float(sys.argv[9])
fio_direct = (before + after) / 2

def load(name):
    rows = [json.loads(line) for line in open(out / f"engine-{name}.jsonl") if line.strip()]
    return {row["strategy"]: row for row in rows}

none_1m = load("append-1MiB-none")
none_64k = load("append-64KiB-x16-none")
always_64k = load("append-64KiB-x16-always")
lines = [
    f"# disk vs engine, {datetime.date.today()}",
    "",
    "Command: `scripts/disk-vs-engine.sh` (one run; fio before and after the engine).",
    "",
    f"fio O_DIRECT sequential write, 1 MiB, iodepth 16: {before:.0f} MB/s before, {after:.0f} MB/s after, mean {fio_direct:.0f} MB/s",
    f"fio buffered pwrite, 1 MiB, fsync at end: {buffered:.0f} MB/s",
    f"fio O_DIRECT 64 KiB, iodepth 16, fdatasync every 16 writes, preallocated: {group:.0f} MB/s",
    f"fio the same, overwriting a file written before: {overwrite:.0f} MB/s",
    f"fio 1 MiB writes one at a time, fdatasync after each, overwriting: {sync_each:.0f} MB/s "
    "(the device's best with 1 MiB per fsync, all that 16 appenders of 64 KiB can have outstanding)",
    "",
    "| strategy | 1 MiB appends, none (MB/s) | vs fio O_DIRECT | 64 KiB x16, none (MB/s) | 64 KiB x16, always (MB/s) | always / none | always vs fio fdatasync/16 | p99 always (us) |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
]
summary = {"fio_direct_mb_s": {"before": before, "after": after, "mean": fio_direct},
           "fio_buffered_mb_s": buffered, "fio_group_commit_mb_s": group, "strategies": {}}
for strategy in none_1m:
    a, b, c = none_1m[strategy], none_64k[strategy], always_64k[strategy]
    ratio_disk = a["throughput_mb_s"] / fio_direct
    ratio_group = c["throughput_mb_s"] / b["throughput_mb_s"]
    summary["strategies"][strategy] = {
        "append_1MiB_none_mb_s": a["throughput_mb_s"], "ratio_vs_fio_direct": ratio_disk,
        "append_64KiB_x16_none_mb_s": b["throughput_mb_s"],
        "append_64KiB_x16_always_mb_s": c["throughput_mb_s"], "ratio_always_vs_none": ratio_group,
        "ratio_always_vs_fio_group_commit": c["throughput_mb_s"] / group,
        "p99_always_us": c["append_latency_us"]["p99"]}
    lines.append(f"| {strategy} | {a['throughput_mb_s']:.0f} | {ratio_disk:.0%} | {b['throughput_mb_s']:.0f} | "
                 f"{c['throughput_mb_s']:.0f} | {ratio_group:.0%} | {c['throughput_mb_s'] / group:.0%} | "
                 f"{c['append_latency_us']['p99']} |")
lines += [
    "",
    f"Steady state: retention on ({steady_segment} segments, {steady_retention} retained), so rolls "
    "overwrite recycled segment files; always and none measured in this run.",
    "",
    "| strategy | recycling | 64 KiB x16, none (MB/s) | 64 KiB x16, always (MB/s) | always / none | always vs fio overwrite fdatasync/16 | p99 always (us) | rolls onto a spare (always) | most always / none the device allows (fio 1 MiB + fdatasync / none) |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]
summary["fio_group_commit_overwrite_mb_s"] = overwrite
summary["fio_sync_each_1MiB_overwrite_mb_s"] = sync_each
summary["steady_state"] = {"segment": steady_segment, "retention": steady_retention, "runs": []}
for name, recycling in (("steady", "on"), ("steady-norecycle", "off")):
    steady_none = load(f"{name}-64KiB-x16-none")
    steady_always = load(f"{name}-64KiB-x16-always")
    for strategy in steady_none:
        b, c = steady_none[strategy], steady_always[strategy]
        ratio = c["throughput_mb_s"] / b["throughput_mb_s"]
        summary["steady_state"]["runs"].append({
            "strategy": strategy, "recycling": recycling,
            "append_64KiB_x16_none_mb_s": b["throughput_mb_s"],
            "append_64KiB_x16_always_mb_s": c["throughput_mb_s"], "ratio_always_vs_none": ratio,
            "ratio_always_vs_fio_overwrite": c["throughput_mb_s"] / overwrite,
            "p99_always_us": c["append_latency_us"]["p99"],
            "reused_always": c["segments_recycled_reused"], "reused_none": b["segments_recycled_reused"],
            "device_ratio_bound": sync_each / b["throughput_mb_s"]})
        lines.append(f"| {strategy} | {recycling} | {b['throughput_mb_s']:.0f} | {c['throughput_mb_s']:.0f} | "
                     f"{ratio:.0%} | {c['throughput_mb_s'] / overwrite:.0%} | {c['append_latency_us']['p99']} | "
                     f"{c['segments_recycled_reused']} | {sync_each / b['throughput_mb_s']:.0%} |")
lines += ["", "Targets (issue 2): direct >= 90% of fio O_DIRECT at 1 MiB; always/none >= 60% with 16 appenders of 64 KiB."]
text = "\n".join(lines) + "\n"
(out / "report.md").write_text(text)
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(text)
PY
