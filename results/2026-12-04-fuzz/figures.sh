#!/usr/bin/env bash
# Prints the summary table's figures from the libFuzzer logs of run.sh.
# Usage: bash results/2026-12-04-fuzz/figures.sh [logs folder]   (default: logs/)
set -uo pipefail
dir="${1:-$(cd "$(dirname "$0")" && pwd)/logs}"
echo "| target | sanitizer | inputs executed | fuzzing time (s) | wall time (s) | execs/s | cov | ft | corpus | crashes |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for log in "$dir"/*.log; do
  target=$(basename "$log" .log)
  runs=$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$')
  seconds=$(grep -oE '^Done [0-9]+ runs in [0-9]+ second' "$log" | grep -oE 'in [0-9]+' | grep -oE '[0-9]+')
  rate=$(grep -oE '^stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$')
  wall=$(grep -oE '^wall_seconds: [0-9]+' "$log" | grep -oE '[0-9]+$')
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1)
  cov=$(echo "$last" | grep -oE 'cov: [0-9]+' | grep -oE '[0-9]+')
  ft=$(echo "$last" | grep -oE 'ft: [0-9]+' | grep -oE '[0-9]+')
  corp=$(echo "$last" | grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' | cut -d' ' -f2)
  if grep -qE 'panicked at|ERROR: (libFuzzer|AddressSanitizer)' "$log"; then crashes=yes; else crashes=0; fi
  echo "| $target | address | ${runs:-?} | ${seconds:-?} | ${wall:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | ${corp:-?} | $crashes |"
done
