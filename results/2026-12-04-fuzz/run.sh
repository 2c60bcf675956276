#!/usr/bin/env bash
# Runs every fuzz target one after the other, as recorded in summary.md.
# Each run stops at 10,000,000 inputs or 15 minutes, whichever comes first.
# Usage: bash results/2026-12-04-fuzz/run.sh [target...]   (from the repository root)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../../fuzz"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(offset_index time_index internal_records quorum_record record_batch request_frame)
fi
max_len() {
  case "$1" in
    offset_index|time_index|internal_records) echo 4096 ;;
    *) echo 65536 ;;
  esac
}
for target in "${targets[@]}"; do
  log="$here/logs/$target.log"
  start=$(date +%s)
  cargo +nightly fuzz run -O -a "$target" -- \
    -runs=10000000 -max_total_time=900 -max_len="$(max_len "$target")" \
    -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1
  status=$?
  echo "wall_seconds: $(( $(date +%s) - start )) exit: $status" >>"$log"
  echo "$target: exit $status, $(( $(date +%s) - start )) s"
done
