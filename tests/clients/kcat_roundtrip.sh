#!/usr/bin/env bash
# kcat round trip: produce COUNT keyed records with headers, consume them back, compare byte
# for byte. Extra arguments go to the producer (e.g. -X compression.codec=zstd).
#
#   kcat_roundtrip.sh BOOTSTRAP TOPIC COUNT [producer args...]
#
# Prints one JSON summary line; exits non-zero on any mismatch.
set -euo pipefail
export LC_ALL=C

bootstrap=$1 topic=$2 count=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Keys sort in production order; values vary in length (1-240 bytes) and bytes, without
# tabs or newlines (the line format's delimiters).
awk -v count="$count" 'BEGIN {
  srand(20261126)
  alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.:;!?/\\\"{}=,\303\251\342\202\254"
  for (i = 0; i < count; i++) {
    len = 1 + int(rand() * 240)
    value = ""
    for (j = 0; j < len; j++) value = value substr(alphabet, 1 + int(rand() * length(alphabet)), 1)
    printf "key-%07d\t%s\n", i, value
  }
}' >"$work/input"

headers=(-H "source=kcat" -H "trace=$topic")
kcat -P -b "$bootstrap" -t "$topic" -K $'\t' "${headers[@]}" \
  -X request.required.acks=-1 -X linger.ms=20 "$@" -l "$work/input" 2>"$work/produce.err" || {
  cat "$work/produce.err" >&2
  echo "{\"client\":\"kcat\",\"ok\":false,\"error\":\"produce failed\"}"
  exit 1
}
if grep -qi "fail\|error" "$work/produce.err"; then
  cat "$work/produce.err" >&2
  echo "{\"client\":\"kcat\",\"ok\":false,\"error\":\"produce reported errors\"}"
  exit 1
fi

kcat -C -b "$bootstrap" -t "$topic" -o beginning -e -q -c "$count" \
  -f '%p\t%o\t%k\t%h\t%s\n' >"$work/consumed" 2>"$work/consume.err" || {
  cat "$work/consume.err" >&2
  echo "{\"client\":\"kcat\",\"ok\":false,\"error\":\"consume failed\"}"
  exit 1
}

# Expected: key, headers as kcat prints them, value; in key order.
awk -F '\t' -v hdr="source=kcat,trace=$topic" '{ print $1 "\t" hdr "\t" $2 }' "$work/input" >"$work/expected"
cut -f 3- "$work/consumed" | sort >"$work/actual"
consumed=$(wc -l <"$work/consumed")
byte_identical=false
cmp -s "$work/expected" "$work/actual" && byte_identical=true
# Per partition: offsets 0, 1, 2... with no gap or repeat, and keys in production order.
order_errors=$(awk -F '\t' '{
    if (($1 in next_offset ? next_offset[$1] : 0) != $2) bad++
    if ($1 in last_key && last_key[$1] >= $3) bad++
    next_offset[$1] = $2 + 1; last_key[$1] = $3
  } END { print bad + 0 }' "$work/consumed")
partitions=$(cut -f 1 "$work/consumed" | sort -u | wc -l)

ok=false
if [ "$byte_identical" = true ] && [ "$order_errors" = 0 ] && [ "$consumed" = "$count" ]; then
  ok=true
fi
if [ "$ok" != true ]; then
  diff "$work/expected" "$work/actual" | head -20 >&2 || true
fi
printf '{"client":"kcat","produced":%d,"consumed":%d,"partitions":%d,"bytes":%d,"byte_identical":%s,"order_errors":%d,"ok":%s}\n' \
  "$count" "$consumed" "$partitions" "$(wc -c <"$work/expected")" "$byte_identical" "$order_errors" "$ok"
[ "$ok" = true ]
