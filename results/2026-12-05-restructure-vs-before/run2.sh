#!/usr/bin/env bash
set -u
cd /work/main
OUTROOT=results/2026-12-05-restructure-vs-before
BROKER=/tmp/wt-old/target/release/broker DISK=0 STRATEGIES="direct buffered" DURABILITIES="none always" \
  OUT=$OUTROOT/loopback-old-2 bash scripts/broker-vs-loopback.sh > /tmp/figs/loopback-old-2.log 2>&1
echo "loopback old 2 rc=$?" >> /tmp/figs/progress2
BROKER=target/release/broker DISK=0 STRATEGIES="direct buffered" DURABILITIES="none always" \
  OUT=$OUTROOT/loopback-roll-3 bash scripts/broker-vs-loopback.sh > /tmp/figs/loopback-roll-3.log 2>&1
echo "loopback roll 3 rc=$?" >> /tmp/figs/progress2
(/work/main/target/release/harness --brokers 3 --replication 3 --data-dir /work/main/target/mainjob-data > /tmp/figs/mainjob-roll-3.log 2>&1)
echo "mainjob roll 3 rc=$?" >> /tmp/figs/progress2
echo all-done >> /tmp/figs/progress2
