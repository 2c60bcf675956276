#!/usr/bin/env node
// KafkaJS consumer group: consume, commit, and a successor that resumes.
//
// KafkaJS produces COUNT records (keys "old-<i>") to a new topic of PARTITIONS partitions. A
// consumer in group "kafkajs-group" reads them all (KafkaJS commits after each batch) and
// disconnects, leaving the group. KafkaJS produces COUNT more ("new-<i>"); a new consumer in
// the same group must read exactly those: it starts at the group's committed offsets, so it
// sees no "old-" record.
//
//   node groups.js BOOTSTRAP TOPIC COUNT PARTITIONS
//
// Prints one JSON summary line; exits non-zero on any mismatch.
'use strict';

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';

const { Kafka, logLevel } = require('kafkajs');

const TIMEOUT_MS = 60000;
const GROUP = 'kafkajs-group';

async function produce(kafka, topic, prefix, count) {
  const producer = kafka.producer({ idempotent: true });
  await producer.connect();
  const messages = [];
  for (let index = 0; index < count; index += 1) {
    messages.push({ key: `${prefix}-${index}`, value: `value-${index}` });
  }
  for (let start = 0; start < count; start += 500) {
    await producer.send({ topic, acks: -1, messages: messages.slice(start, start + 500) });
  }
  await producer.disconnect();
}

// Runs one group member until it has seen `count` distinct keys; returns what it saw.
async function consume(kafka, topic, count) {
  const consumer = kafka.consumer({ groupId: GROUP, sessionTimeout: 10000, heartbeatInterval: 1000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = new Map();
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out with ${seen.size} of ${count}`)), TIMEOUT_MS);
    consumer
      .run({
        eachMessage: async ({ message }) => {
          const key = message.key.toString();
          seen.set(key, (seen.get(key) || 0) + 1);
          if (seen.size >= count) {
            clearTimeout(timer);
            resolve();
          }
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  return seen;
}

async function main() {
  const [bootstrap, topic, countText, partitionsText] = process.argv.slice(2);
  const count = Number(countText);
  const kafka = new Kafka({ brokers: [bootstrap], clientId: 'kafkajs-groups', logLevel: logLevel.WARN });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: Number(partitionsText) }] });
  await admin.disconnect();

  await produce(kafka, topic, 'old', count);
  const first = await consume(kafka, topic, count);
  await produce(kafka, topic, 'new', count);
  const second = await consume(kafka, topic, count);

  const secondOld = [...second.keys()].filter((key) => key.startsWith('old-')).length;
  const secondNew = [...second.keys()].filter((key) => key.startsWith('new-')).length;
  const firstDuplicates = [...first.values()].filter((times) => times > 1).length;
  const ok = first.size === count && secondOld === 0 && secondNew === count && firstDuplicates === 0;
  console.log(JSON.stringify({ ok, first: first.size, first_duplicates: firstDuplicates, second_old: secondOld, second_new: secondNew }));
  process.exit(ok ? 0 : 1);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
