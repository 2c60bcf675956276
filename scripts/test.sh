#!/usr/bin/env bash
# The README's test command. Installs what the tests need and a fresh Debian machine lacks
# (only what is missing, so it is quick on a prepared machine), raises memlock if it can, runs
# `cargo test --workspace` (extra arguments are passed on) and ends with the totals.
#
# Needed by the tests: kcat, and the Python clients confluent-kafka and kafka-python, and
# KafkaJS (npm ci in tests/clients/node) for engine/tests/clients.rs; e2fsprogs for the
# full-disk tests; fio for the scripts.
# System packages need root: sudo is used when not root.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

echo "== test dependencies"
packages=()
command -v kcat >/dev/null || packages+=(kcat)
command -v fio >/dev/null || packages+=(fio)
# mkfs.ext4 for the full-disk tests (a small loop-mounted file system; skipped without root).
command -v mkfs.ext4 >/dev/null || packages+=(e2fsprogs)
command -v python3 >/dev/null || packages+=(python3)
python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)
if [ ${#packages[@]} -gt 0 ]; then
  echo "apt: installing ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

modules=()
# The share-consumer tests call librdkafka's share consumer API (2.15 and later), which the
# confluent-kafka wheel bundles: an older one is upgraded.
python3 -c 'import confluent_kafka, sys; sys.exit(confluent_kafka.libversion()[1] < 0x020F0000)' \
  2>/dev/null || modules+=(confluent-kafka)
python3 -c 'import kafka' 2>/dev/null || modules+=(kafka-python)
if [ ${#modules[@]} -gt 0 ]; then
  echo "pip: installing ${modules[*]}"
  # Debian's own Python refuses pip outside a virtualenv (PEP 668) unless told otherwise.
  python3 -m pip install -q "${modules[@]}" 2>/dev/null ||
    python3 -m pip install -q --break-system-packages "${modules[@]}"
fi

node_dir=tests/clients/node
# npm ci leaves node_modules/.package-lock.json; reinstall when the lock file is newer.
if [ ! -f "$node_dir/node_modules/kafkajs/package.json" ] ||
  [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
  echo "npm: installing $node_dir"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== limits"
# glommio locks io_memory per executor and the uring strategy registers buffers (README:
# memlock). Raise the soft limit as far as the hard limit allows.
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true
echo "memlock: $(ulimit -l)"
if [ -r /proc/sys/kernel/io_uring_disabled ] && [ "$(cat /proc/sys/kernel/io_uring_disabled)" != 0 ]; then
  echo "warning: io_uring is disabled (kernel.io_uring_disabled); the tests need it" >&2
fi

echo "== cargo test --workspace $*"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
# cargo's last lines are doc-test summaries of crates without doc tests ("0 passed"); close
# with the total over every test binary instead.
awk '/^test result:/ { passed += $4; failed += $6 }
  END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
