#!/usr/bin/env bash
# old vs new, alternated: broker-vs-loopback then the README main job.
set -u
cd /work/main
OUTROOT=results/2026-12-05-restructure-vs-before
mkdir -p $OUTROOT
for round in 1 2; do
  for side in old new; do
    if [ $side = old ]; then B=/tmp/wt-old/target/release/broker; else B=target/release/broker; fi
    BROKER=$B DISK=0 STRATEGIES="direct buffered" DURABILITIES="none always" \
      OUT=$OUTROOT/loopback-$side-$round bash scripts/broker-vs-loopback.sh > /tmp/figs/loopback-$side-$round.log 2>&1
    echo "loopback $side $round rc=$?" >> /tmp/figs/progress
  done
done
for round in 1 2; do
  for side in old new; do
    if [ $side = old ]; then H=/tmp/wt-old/target/release/harness; cwd=/tmp/wt-old; else H=/work/main/target/release/harness; cwd=/work/main; fi
    (cd $cwd && $H --brokers 3 --replication 3 --data-dir /work/main/target/mainjob-data > /tmp/figs/mainjob-$side-$round.log 2>&1)
    echo "mainjob $side $round rc=$?" >> /tmp/figs/progress
  done
done
echo all-done >> /tmp/figs/progress
