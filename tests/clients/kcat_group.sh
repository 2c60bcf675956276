#!/usr/bin/env bash
# kcat as a member of a consumer group (kcat -G, librdkafka's balanced consumer).
#
#     kcat_group.sh BOOTSTRAP GROUP TOPIC LIMIT
#
# Consumes TOPIC in GROUP, from the group's committed offsets (earliest where it has none),
# until LIMIT records (LIMIT > 0) or the end of every assigned partition (LIMIT 0), then
# closes, which commits what it consumed (auto commit) and leaves the group. Prints one JSON
# line with the keys it consumed, in order.
set -euo pipefail
bootstrap=$1 group=$2 topic=$3 limit=$4
args=(-b "$bootstrap" -X broker.address.family=v4 -X auto.offset.reset=earliest
  -G "$group" -q -f '%k\n')
if [ "$limit" -gt 0 ]; then args+=(-c "$limit"); else args+=(-e); fi
kcat "${args[@]}" "$topic" |
  python3 -c 'import json, sys
keys = [line for line in sys.stdin.read().split("\n") if line]
print(json.dumps({"ok": True, "count": len(keys), "keys": keys}))'
