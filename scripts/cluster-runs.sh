#!/usr/bin/env bash
# The harness's standard cluster runs (issue 5), in one go so the ratios come from one run:
#   1 KiB records in 1 MiB batches, acks=all, producers and consumers running together
#   (--consume during), for 1 and 16 partitions, on 1 broker with replication 1 and on 3
#   brokers with replication 3 (min.insync.replicas 2), for each storage strategy.
# Prints, per strategy and partition count, the 3-broker publish throughput as a share of
# the 1-broker one (target: at least a third) and the p99 publish latency of each run. Then,
# per strategy on 3 brokers with replication 3 and one partition, the maximum sustainable
# rate (--find-max-rate) and the p99 publish latency at half of it.
# Every harness run saves its own folder under OUT/runs/ (charts included); this script
# writes a report.md and summary.json into OUT.
#
# Usage: scripts/cluster-runs.sh
#   DURATION=10s WARMUP=2s STRATEGIES="direct buffered uring" PARTITIONS="1 16"
#   SEGMENT_BYTES=64MiB (each partition replica preallocates one segment)
#   MAX_RATE=1 (0 skips the rate searches)
#   OUT=results/<date>-cluster-runs
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-10s}
warmup=${WARMUP:-2s}
strategies=${STRATEGIES:-direct buffered uring}
partition_counts=${PARTITIONS:-1 16}
segment_bytes=${SEGMENT_BYTES:-64MiB}
max_rate=${MAX_RATE:-1}
out=${OUT:-"results/$(date +%F)-cluster-runs"}
mkdir -p "$out/runs"

cargo build --release -q -p shardlog-harness
harness=target/release/harness
: >"$out/runs.jsonl"
for partitions in $partition_counts; do
  clients=$(( partitions < 4 ? 1 : 4 ))
  for layout in "1 1" "3 3"; do
    set -- $layout
    brokers=$1 replication=$2
    for strategy in $strategies; do
      echo "== $strategy, $partitions partitions, $brokers brokers, replication $replication" >&2
      "$harness" --brokers "$brokers" --replication "$replication" --strategy "$strategy" \
        --partitions "$partitions" --producers "$clients" --consumers "$clients" \
        --acks all --consume during --duration "$duration" --warmup "$warmup" \
        --segment-bytes "$segment_bytes" --data-dir target/cluster-runs --results-dir "$out/runs" --json \
        | tail -n 1 \
        | python3 -c 'import json,sys; s=json.load(sys.stdin); s["brokers"]=int(sys.argv[1]); s["replication"]=int(sys.argv[2]); s["strategy"]=sys.argv[3]; print(json.dumps(s))' \
            "$brokers" "$replication" "$strategy" >>"$out/runs.jsonl"
    done
  done
done

: >"$out/max-rate.jsonl"
if [ "$max_rate" != 0 ]; then
  for strategy in $strategies; do
    echo "== $strategy, maximum sustainable rate on 3 brokers, replication 3" >&2
    "$harness" --brokers 3 --replication 3 --strategy "$strategy" --partitions 1 \
      --acks all --consume during --find-max-rate --duration "$duration" --warmup "$warmup" \
      --segment-bytes "$segment_bytes" --data-dir target/cluster-runs --results-dir "$out/runs" --json \
      | tail -n 1 \
      | python3 -c 'import json,sys; s=json.load(sys.stdin); s["strategy"]=sys.argv[1]; print(json.dumps(s))' \
          "$strategy" >>"$out/max-rate.jsonl"
  done
fi

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
runs = [json.loads(line) for line in open(f"{out}/runs.jsonl")]
def key(run):
    return (run["strategy"], run["partitions"], run["brokers"])
by = {key(run): run for run in runs}
rows, summary = [], []
for run in runs:
    if run["brokers"] != 3:
        continue
    single = by.get((run["strategy"], run["partitions"], 1))
    if single is None:
        continue
    mb3 = run["publish"]["throughput_mb_s"]
    mb1 = single["publish"]["throughput_mb_s"]
    ratio = mb3 / mb1 if mb1 else float("nan")
    entry = {
        "strategy": run["strategy"], "partitions": run["partitions"],
        "publish_mb_s_1_broker_rf1": round(mb1, 1), "publish_mb_s_3_brokers_rf3": round(mb3, 1),
        "ratio": round(ratio, 3),
        "p99_us_1_broker": single["publish"]["latency_us"]["p99"],
        "p99_us_3_brokers": run["publish"]["latency_us"]["p99"],
        "consume_mb_s_1_broker": round((single.get("consume") or {}).get("throughput_mb_s", 0), 1),
        "consume_mb_s_3_brokers": round((run.get("consume") or {}).get("throughput_mb_s", 0), 1),
    }
    summary.append(entry)
    rows.append("| {strategy} | {partitions} | {publish_mb_s_1_broker_rf1} | {publish_mb_s_3_brokers_rf3} | **{pct:.0f}%** | {p99_us_1_broker} | {p99_us_3_brokers} |".format(pct=100 * ratio, **entry))
rates = [json.loads(line) for line in open(f"{out}/max-rate.jsonl")]
rate_rows = []
for run in rates:
    search = run.get("rate_search") or {}
    entry = {
        "strategy": run["strategy"],
        "max_sustainable_records_per_s": search.get("max_sustainable_records_per_s"),
        "measured_records_per_s": round(run["publish"]["records_per_s"]),
        "p99_us_at_half_max": run["publish"]["latency_us"]["p99"],
        "p50_us_at_half_max": run["publish"]["latency_us"]["p50"],
    }
    summary.append(entry)
    rate_rows.append("| {strategy} | {max_sustainable_records_per_s} | {measured_records_per_s} | {p50_us_at_half_max} | {p99_us_at_half_max} |".format(**entry))
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
report = ["# 1 broker (rf 1) vs 3 brokers (rf 3), acks=all, one run", "",
          "1 KiB records, 1 MiB batches, producers and consumers together; target: 3 brokers keep at least 33% of 1 broker's publish throughput.", "",
          "| strategy | partitions | 1 broker MB/s | 3 brokers MB/s | 3 vs 1 | p99 us, 1 broker | p99 us, 3 brokers |",
          "| --- | --- | --- | --- | --- | --- | --- |"] + rows
if rate_rows:
    report += ["", "## p99 publish latency at half the maximum sustainable rate (3 brokers, rf 3, 1 partition, acks=all)", "",
               "| strategy | max sustainable records/s | measured records/s | p50 us | p99 us |",
               "| --- | --- | --- | --- | --- |"] + rate_rows
open(f"{out}/report.md", "w").write("\n".join(report) + "\n")
print("\n".join(report))
PY

# Charts: one per run folder, and the strategies side by side on 3 brokers, 1 partition.
if python3 -c 'import matplotlib' 2>/dev/null; then
  python3 scripts/charts.py "$out"/runs/*/ --out "$out/runs" >/dev/null
  python3 scripts/charts.py "$out"/runs/*-1p-1p1c-acksall-[a-z]*-none-3brokers-rf3 --out "$out" >/dev/null
  rm -f "$out/runs/comparison.png"
else
  echo "no matplotlib: skipping the charts (python3 -m pip install matplotlib)" >&2
fi
