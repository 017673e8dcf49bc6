'use strict'
// Runs one kafkajs scenario against a broker, for tests/python/test_js_clients.py:
//
//   node client.js <scenario>  < spec.json
//
// The spec (JSON on stdin) names the broker, the topics and groups, and the records to send;
// `lib` picks the client: "current" (kafkajs 2.2.4) or "old" (kafkajs 1.16.0), both installed
// by install.sh into .cache/node_modules. Each step prints one line of JSON to stdout,
// {"step": NAME, "result": ...}: what the client reported, unjudged; the Python test decides
// what is right. The first step, "client", names the kafkajs version that ran. kafkajs's own
// log goes to stderr. On failure: a line {"error": ...} and exit 1; past the spec's
// deadline_ms: exit 2.
//
// Scenarios: admin (create, describe, alter configs, add partitions, produce, list offsets),
// delete-topic, produce, transactions, group-consume (members of one group, held paused until
// the group is stable with all of them, reading to a given count), group-offsets.

const path = require('path')

const MODULES = path.join(__dirname, '.cache', 'node_modules')
const POLL_MS = 100

// The installed packages (package.json's names for them).
const LIBS = { current: 'kafkajs', old: 'kafkajs-old' }

function load(lib) {
  const name = LIBS[lib || 'current']
  if (!name) throw new Error(`unknown lib ${lib}`)
  return require(path.join(MODULES, name))
}

function emit(step, result) {
  process.stdout.write(JSON.stringify({ step, result }) + '\n')
}

function readStdin() {
  return new Promise((resolve, reject) => {
    let text = ''
    process.stdin.setEncoding('utf8')
    process.stdin.on('data', chunk => (text += chunk))
    process.stdin.on('end', () => resolve(JSON.parse(text)))
    process.stdin.on('error', reject)
  })
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

// Polls `check` (async, returns {done, ...}) every POLL_MS until it is done or `timeoutMs`
// has passed; returns its last answer either way, so that the caller reports what it saw.
async function pollUntil(check, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value.done || Date.now() >= deadline) return value
    await sleep(POLL_MS)
  }
}

function kafkaFor(spec) {
  const kafkajs = load(spec.lib)
  const { Kafka, logLevel } = kafkajs
  const level = process.env.KAFKAJS_LOG_LEVEL || 'WARN'
  const kafka = new Kafka({
    clientId: spec.client_id,
    brokers: [spec.bootstrap],
    logLevel: logLevel[level],
    // kafkajs logs to stdout by default; stdout carries the results.
    logCreator: () => ({ namespace, label, log }) => {
      process.stderr.write(`${label} [${namespace}] ${JSON.stringify(log)}\n`)
    },
  })
  return { kafka, kafkajs }
}

function partitionsOf(metadata, topic) {
  const t = metadata.topics.find(x => x.name === topic)
  if (!t) return null
  return t.partitions
    .map(p => ({
      partition: p.partitionId,
      error_code: p.partitionErrorCode,
      leader: p.leader,
      replicas: p.replicas,
      isr: p.isr,
    }))
    .sort((a, b) => a.partition - b.partition)
}

async function describeTopicConfigs(admin, kafkajs, topic, names) {
  const res = await admin.describeConfigs({
    includeSynonyms: false,
    resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: topic, configNames: names }],
  })
  const r = res.resources[0]
  const entries = {}
  for (const e of r.configEntries) {
    entries[e.configName] = {
      value: e.configValue,
      is_default: e.isDefault,
      source: e.configSource === undefined ? null : e.configSource,
      read_only: e.readOnly,
    }
  }
  return { error_code: r.errorCode, entries }
}

function metadataOf(sent) {
  return sent
    .map(m => ({
      partition: m.partition,
      base_offset: Number(m.baseOffset),
      error_code: m.errorCode,
    }))
    .sort((a, b) => a.partition - b.partition)
}

// {name: value} as kafkajs's config entries.
const entries = configs => Object.entries(configs).map(([name, value]) => ({ name, value }))

function asMessages(messages) {
  return messages.map(m => {
    const out = { key: m.key, value: m.value }
    if (m.partition !== undefined) out.partition = m.partition
    if (m.timestamp !== undefined) out.timestamp = String(m.timestamp)
    return out
  })
}

// The group's committed offsets on `topic`, {partition: offset}, partitions without one left
// out. kafkajs 1.x takes one topic; 2.x a list.
async function groupOffsets(admin, spec, groupId, topic) {
  let partitions
  if (spec.lib === 'old') {
    partitions = await admin.fetchOffsets({ groupId, topic })
  } else {
    const res = await admin.fetchOffsets({ groupId, topics: [topic] })
    partitions = res.find(t => t.topic === topic).partitions
  }
  const out = {}
  for (const p of partitions) if (Number(p.offset) >= 0) out[p.partition] = Number(p.offset)
  return out
}

function endOffsets(records) {
  const ends = {}
  for (const r of records) ends[r.p] = Math.max(ends[r.p] || 0, r.o + 1)
  return ends
}

const sameOffsets = (a, b) =>
  Object.keys(a).length === Object.keys(b).length && Object.keys(a).every(k => a[k] === b[k])

function describedGroup(kafkajs, group, topic) {
  const decode = buf => {
    if (!buf || buf.length === 0) return []
    const a = kafkajs.AssignerProtocol.MemberAssignment.decode(buf)
    return ((a && a.assignment[topic]) || []).slice().sort((x, y) => x - y)
  }
  return {
    error_code: group.errorCode,
    state: group.state,
    protocol_type: group.protocolType,
    protocol: group.protocol,
    members: group.members
      .map(m => ({
        member_id: m.memberId,
        client_id: m.clientId,
        assignment: decode(m.memberAssignment),
      }))
      .sort((a, b) => (a.member_id < b.member_id ? -1 : 1)),
  }
}

// -- scenarios ------------------------------------------------------------------------------

async function adminScenario(spec) {
  const { kafka, kafkajs } = kafkaFor(spec)
  const admin = kafka.admin()
  await admin.connect()
  const topic = spec.topic
  const TOPIC = kafkajs.ConfigResourceTypes.TOPIC
  try {
    const create = {
      waitForLeaders: true,
      topics: [{
        topic,
        numPartitions: spec.partitions,
        replicationFactor: 1,
        configEntries: entries(spec.configs || {}),
      }],
    }
    emit('created', await admin.createTopics(create))
    emit('created_again', await admin.createTopics(create))
    emit('metadata', partitionsOf(await admin.fetchTopicMetadata({ topics: [topic] }), topic))
    if (spec.lib === 'old') return // 1.x: createTopics and fetchTopicMetadata only

    emit('configs', await describeTopicConfigs(admin, kafkajs, topic, spec.config_names))
    await admin.alterConfigs({
      validateOnly: false,
      resources: [{
        type: TOPIC,
        name: topic,
        configEntries: entries(spec.altered_configs),
      }],
    })
    emit('configs_altered', await describeTopicConfigs(admin, kafkajs, topic, spec.config_names))

    await admin.createPartitions({ topicPartitions: [{ topic, count: spec.partitions_grown }] })
    emit('metadata_grown', partitionsOf(await admin.fetchTopicMetadata({ topics: [topic] }), topic))

    const producer = kafka.producer({ createPartitioner: kafkajs.Partitioners.DefaultPartitioner })
    await producer.connect()
    try {
      const messages = asMessages(spec.records)
      emit('sent', metadataOf(await producer.send({ topic, acks: -1, messages })))
    } finally {
      await producer.disconnect()
    }
    const offsets = await admin.fetchTopicOffsets(topic)
    emit('offsets', offsets
      .map(o => ({
        partition: o.partition,
        low: Number(o.low),
        high: Number(o.high),
        offset: Number(o.offset),
      }))
      .sort((a, b) => a.partition - b.partition))
    const byTime = await admin.fetchTopicOffsetsByTimestamp(topic, spec.timestamp)
    emit('offsets_by_timestamp', byTime
      .map(o => ({ partition: o.partition, offset: Number(o.offset) }))
      .sort((a, b) => a.partition - b.partition))
  } finally {
    await admin.disconnect()
  }
}

async function deleteTopicScenario(spec) {
  const { kafka } = kafkaFor(spec)
  const admin = kafka.admin()
  await admin.connect()
  try {
    emit('listed', (await admin.listTopics()).includes(spec.topic))
    await admin.deleteTopics({ topics: [spec.topic] })
    emit('listed_after_delete', (await admin.listTopics()).includes(spec.topic))
  } finally {
    await admin.disconnect()
  }
}

async function groupOffsetsScenario(spec) {
  const { kafka } = kafkaFor(spec)
  const admin = kafka.admin()
  await admin.connect()
  try {
    emit('committed', await groupOffsets(admin, spec, spec.group, spec.topic))
  } finally {
    await admin.disconnect()
  }
}

async function produceScenario(spec) {
  const { kafka, kafkajs } = kafkaFor(spec)
  const producer = kafka.producer({
    idempotent: !!spec.idempotent,
    createPartitioner: kafkajs.Partitioners.DefaultPartitioner,
  })
  await producer.connect()
  try {
    for (const batch of spec.batches) {
      const compression = {
        none: kafkajs.CompressionTypes.None,
        gzip: kafkajs.CompressionTypes.GZIP,
      }[batch.compression]
      if (compression === undefined) throw new Error(`unknown compression ${batch.compression}`)
      const messages = asMessages(batch.messages)
      const sent = await producer.send({ topic: spec.topic, acks: -1, compression, messages })
      emit('sent', metadataOf(sent))
    }
  } finally {
    await producer.disconnect()
  }
}

async function transactionsScenario(spec) {
  const { kafka, kafkajs } = kafkaFor(spec)
  const producer = kafka.producer({
    transactionalId: spec.transactional_id,
    maxInFlightRequests: 1,
    idempotent: true,
    createPartitioner: kafkajs.Partitioners.DefaultPartitioner,
  })
  await producer.connect()
  try {
    for (const t of spec.transactions) {
      const txn = await producer.transaction()
      const sent = await txn.send({ topic: spec.topic, messages: asMessages(t.messages) })
      if (t.offsets) {
        await txn.sendOffsets({
          consumerGroupId: spec.group,
          topics: [{
            topic: spec.offsets_topic,
            partitions: Object.entries(t.offsets)
              .map(([p, o]) => ({ partition: Number(p), offset: String(o) })),
          }],
        })
      }
      if (t.action === 'commit') await txn.commit()
      else if (t.action === 'abort') await txn.abort()
      else throw new Error(`unknown action ${t.action}`)
      emit('transaction', { action: t.action, sent: metadataOf(sent) })
    }
  } finally {
    await producer.disconnect()
  }
}

// Group members that consume `spec.topic` from the beginning. Each pauses the topic as soon
// as it has joined, so that nothing is fetched until every member is in the group: the
// records are then read in one generation, each by the member its partition is assigned to.
async function groupConsumeScenario(spec) {
  const { kafka, kafkajs } = kafkaFor(spec)
  const { topic, group } = spec
  const members = spec.members || 1
  const admin = kafka.admin()
  await admin.connect()
  const records = []
  const joins = {}
  const consumers = []
  let released = false
  try {
    for (let m = 0; m < members; m++) {
      const consumer = kafka.consumer({
        groupId: group,
        readUncommitted: !!spec.read_uncommitted,
        heartbeatInterval: 500,
        // A fetch long-polls this long, and a paused member sleeps this long between
        // fetches: short, so that resuming and leaving take no more (the default is 5 s).
        maxWaitTimeInMs: 250,
      })
      consumers.push(consumer)
      consumer.on(consumer.events.GROUP_JOIN, e => {
        if (!released) consumer.pause([{ topic }])
        const assigned = (e.payload.memberAssignment[topic] || []).slice().sort((x, y) => x - y)
        joins[m] = { member_id: e.payload.memberId, assignment: assigned }
      })
      await consumer.connect()
      await consumer.subscribe({ topic, fromBeginning: true })
      await consumer.run({
        eachMessage: async ({ partition, message }) => {
          records.push({
            member: m,
            p: partition,
            o: Number(message.offset),
            k: message.key === null ? null : message.key.toString(),
            v: message.value === null ? null : message.value.toString(),
            ts: Number(message.timestamp),
          })
        },
      })
    }

    // Every member joined, and the group's own view of the assignment is what each was told.
    const stable = await pollUntil(async () => {
      const { groups } = await admin.describeGroups([group])
      const described = describedGroup(kafkajs, groups[0], topic)
      const ours = Object.values(joins)
      const done = described.state === 'Stable' && described.members.length === members &&
        ours.length === members &&
        ours.every(j => {
          const d = described.members.find(x => x.member_id === j.member_id)
          return d && JSON.stringify(d.assignment) === JSON.stringify(j.assignment)
        })
      return { done, described }
    }, spec.wait_ms)
    emit('joined', joins)
    emit('described', stable.described)
    if (!stable.done) throw new Error('the group did not become stable with every member')

    released = true
    for (const c of consumers) c.resume([{ topic }])
    const got = await pollUntil(async () => ({ done: records.length >= spec.expect }), spec.wait_ms)
    if (!got.done) {
      emit('records', records)
      throw new Error(`consumed ${records.length} of ${spec.expect} records`)
    }
    // Auto-commit commits after each batch; wait (bounded) for the last one to land.
    const ends = endOffsets(records)
    const committed = await pollUntil(async () => {
      const offsets = await groupOffsets(admin, spec, group, topic)
      return { done: sameOffsets(offsets, ends), offsets }
    }, spec.wait_ms)
    emit('records', records)
    emit('committed', committed.offsets)

    for (const c of consumers) await c.disconnect()
    consumers.length = 0
    const { groups } = await admin.describeGroups([group])
    emit('described_after_leave', describedGroup(kafkajs, groups[0], topic))
    emit('committed_after_leave', await groupOffsets(admin, spec, group, topic))
  } finally {
    for (const c of consumers) await c.disconnect().catch(() => {})
    await admin.disconnect()
  }
}

const SCENARIOS = {
  admin: adminScenario,
  produce: produceScenario,
  transactions: transactionsScenario,
  'group-consume': groupConsumeScenario,
  'delete-topic': deleteTopicScenario,
  'group-offsets': groupOffsetsScenario,
}

async function main() {
  const scenario = SCENARIOS[process.argv[2]]
  if (!scenario) {
    throw new Error(`usage: node client.js <${Object.keys(SCENARIOS).join('|')}> < spec.json`)
  }
  const spec = await readStdin()
  const version = require(path.join(MODULES, LIBS[spec.lib || 'current'], 'package.json')).version
  emit('client', { lib: spec.lib || 'current', version })
  setTimeout(() => {
    const name = process.argv[2]
    process.stderr.write(`client.js: ${name} did not finish within ${spec.deadline_ms} ms\n`)
    process.exit(2)
  }, spec.deadline_ms)
  await scenario(spec)
}

main().then(
  () => process.exit(0),
  e => {
    process.stdout.write(JSON.stringify({ error: `${e.name}: ${e.message}` }) + '\n')
    process.stderr.write(`${e.stack}\n`)
    process.exit(1)
  }
)
