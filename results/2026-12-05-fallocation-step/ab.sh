#!/usr/bin/env bash
set -u
cd /work/main
OUTROOT=results/2026-12-05-fallocation-step
for round in 1 2; do
  BROKER=/tmp/wt-old/target/release/broker DISK=0 STRATEGIES=direct DURABILITIES=none OUT=$OUTROOT/old-$round bash scripts/broker-vs-loopback.sh > /tmp/figs/ab-old-$round.log 2>&1; echo "old $round $?" >> /tmp/figs/ab-progress
  DISK=0 STRATEGIES=direct DURABILITIES=none OUT=$OUTROOT/step32m-$round bash scripts/broker-vs-loopback.sh > /tmp/figs/ab-32m-$round.log 2>&1; echo "32m $round $?" >> /tmp/figs/ab-progress
  BROKER_CONFIG=/tmp/figs/step1g.toml DISK=0 STRATEGIES=direct DURABILITIES=none OUT=$OUTROOT/step1g-$round bash scripts/broker-vs-loopback.sh > /tmp/figs/ab-1g-$round.log 2>&1; echo "1g $round $?" >> /tmp/figs/ab-progress
done
echo all-done >> /tmp/figs/ab-progress
