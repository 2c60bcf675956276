#!/usr/bin/env node
// KafkaJS round trip.
//
// KafkaJS creates a topic of PARTITIONS partitions (admin) and produces COUNT keyed records
// with headers (idempotent producer, acks=all, half the requests gzip-compressed, which the
// broker stores without decoding). KafkaJS can only consume through a consumer group, and the
// broker has no group coordinator yet (KafkaJS issue #853: no assign-style consumer), so kcat
// reads the records back by partition and offset. Every record is checked: partition, offset,
// key, headers, value; the high watermarks come from KafkaJS's admin (ListOffsets).
//
//   node roundtrip.js BOOTSTRAP TOPIC COUNT PARTITIONS
//
// Prints one JSON summary line; exits non-zero on any mismatch.
'use strict';

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';

const { spawnSync } = require('child_process');
const { Kafka, CompressionTypes, logLevel } = require('kafkajs');

const SEND_RECORDS = 500;
const TIMEOUT_MS = 60000;

// Printable text without the line format's delimiters (tab, newline), some of it UTF-8.
const ALPHABET = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.:;!?/=,{}éü€';

function makeValue(index) {
  let state = (index * 2654435761 + 1) >>> 0;
  const next = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state;
  };
  const length = 1 + (next() % 300);
  let value = '';
  for (let i = 0; i < length; i += 1) value += ALPHABET[next() % ALPHABET.length];
  return value;
}

async function main() {
  const [bootstrap, topic, countText, partitionsText] = process.argv.slice(2);
  const count = Number(countText);
  const partitions = Number(partitionsText);
  const kafka = new Kafka({ clientId: 'shardlog-kafkajs', brokers: [bootstrap], logLevel: logLevel.WARN });

  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: partitions }], waitForLeaders: true });

  const expected = new Map(); // "partition\toffset" -> "key\theaders\tvalue"
  const problems = [];
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  for (let start = 0; start < count; start += SEND_RECORDS) {
    const messages = [];
    for (let index = start; index < Math.min(count, start + SEND_RECORDS); index += 1) {
      messages.push({
        key: `js-${String(index).padStart(6, '0')}`,
        value: makeValue(index),
        headers: { index: String(index), lang: 'node' },
        partition: index % partitions,
      });
    }
    const compression = (start / SEND_RECORDS) % 2 === 0 ? CompressionTypes.None : CompressionTypes.GZIP;
    const results = await producer.send({ topic, messages, acks: -1, compression, timeout: TIMEOUT_MS });
    // One batch per partition per request: its records take consecutive offsets.
    for (const result of results) {
      if (result.errorCode !== 0) problems.push(`produce error ${result.errorCode}`);
      let offset = Number(result.baseOffset);
      for (const message of messages.filter((m) => m.partition === result.partition)) {
        const headers = `index=${message.headers.index},lang=${message.headers.lang}`;
        expected.set(`${result.partition}\t${offset}`, `${message.key}\t${headers}\t${message.value}`);
        offset += 1;
      }
    }
  }
  await producer.disconnect();

  const watermarks = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const perPartition = new Array(partitions).fill(0);
  for (const key of expected.keys()) perPartition[Number(key.split('\t')[0])] += 1;
  for (const { partition, high, low } of watermarks) {
    if (Number(low) !== 0 || Number(high) !== perPartition[partition]) {
      problems.push(`partition ${partition}: watermarks ${low}..${high}, produced ${perPartition[partition]}`);
    }
  }

  const kcat = spawnSync('kcat', ['-C', '-b', bootstrap, '-t', topic, '-o', 'beginning', '-e', '-q',
    '-c', String(count), '-f', '%p\t%o\t%k\t%h\t%s\n'], { maxBuffer: 1 << 30, timeout: TIMEOUT_MS });
  if (kcat.error || kcat.status !== 0) {
    problems.push(`kcat failed: ${kcat.error || kcat.stderr.toString()}`);
  }
  const lines = kcat.stdout ? kcat.stdout.toString('utf8').split('\n').filter((line) => line !== '') : [];
  const seen = new Set();
  for (const line of lines) {
    const fields = line.split('\t');
    const position = `${fields[0]}\t${fields[1]}`;
    const record = fields.slice(2).join('\t');
    if (seen.has(position)) problems.push(`duplicate at ${position}`);
    seen.add(position);
    if (expected.get(position) !== record) problems.push(`mismatch at ${position.replace('\t', ':')}`);
  }
  const ok = problems.length === 0 && expected.size === count && lines.length === count;
  console.log(JSON.stringify({
    client: 'kafkajs', consumer: 'kcat', produced: count, acknowledged: expected.size,
    consumed: lines.length, partitions: perPartition, problems: problems.slice(0, 5), ok,
  }));
  process.exit(ok ? 0 : 1);
}

main().catch((error) => {
  console.error(error);
  console.log(JSON.stringify({ client: 'kafkajs', ok: false, error: String(error) }));
  process.exit(1);
});
