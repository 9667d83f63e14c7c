// Publish recognitions to Rapport's Kafka topic from Node.js, with kafkajs and the
// CloudEvents SDK: binary content mode (attributes in ce_* headers, JSON data), as
// Rapport's own services write them, or structured mode with --structured.
//
//   KAFKA_BROKERS=127.0.0.1:9092 node produce.mjs recognitions.json [--structured]
//
// recognitions.json: a JSON list of {id, source, giver_id, recipient_ids, message,
// values, occurred_at}; occurred_at with its offset ("2026-11-20T09:30:00Z"). Prints the
// partitions the broker acknowledged them on.
import { readFile } from "node:fs/promises";
import { CloudEvent, Kafka as CloudEventsKafka } from "cloudevents";
import { Kafka, Partitioners, logLevel } from "kafkajs";

export const TOPIC = "rapport.recognition.v1";
export const TYPE = "rapport.recognition.given.v1";

// One recognition as a kafkajs message.
export function message({ id, source, ...data }, { structured = false } = {}) {
  const event = new CloudEvent({
    id, source, type: TYPE, time: new Date().toISOString(),
    datacontenttype: "application/json", data,
  });
  const ce = structured ? CloudEventsKafka.structured(event) : CloudEventsKafka.binary(event);
  return {
    // Rapport's key for a recognition: "<source>|<id>". kafkajs's default partitioner is
    // Java's murmur2, as Rapport's, so the record lands on the partition Rapport reads
    // that event on (librdkafka users: partitioner=murmur2_random).
    key: `${source}|${id}`,
    // The SDK leaves binary data as an object and the timestamp as a number; kafkajs
    // takes a string or a Buffer for each.
    value: typeof ce.value === "string" ? ce.value : JSON.stringify(ce.value),
    headers: Object.fromEntries(
      Object.entries(ce.headers).filter(([, v]) => v !== undefined).map(([k, v]) => [k, String(v)]),
    ),
    timestamp: String(ce.timestamp),
  };
}

export async function produce(brokers, recognitions, options = {}) {
  const kafka = new Kafka({ clientId: "rapport-node-producer", brokers, logLevel: logLevel.WARN });
  // DefaultPartitioner: Java's murmur2 (kafkajs 2's default, named to say so).
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  try {
    // acks: -1: Rapport counts a recognition once every in-sync replica has it.
    const sent = await producer.send({
      topic: TOPIC, acks: -1, messages: recognitions.map((r) => message(r, options)),
    });
    return sent;
  } finally {
    await producer.disconnect();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [file, ...flags] = process.argv.slice(2);
  if (!file || !process.env.KAFKA_BROKERS) {
    console.error("usage: KAFKA_BROKERS=host:port node produce.mjs recognitions.json [--structured]");
    process.exit(2);
  }
  const recognitions = JSON.parse(await readFile(file, "utf8"));
  const structured = flags.includes("--structured");
  const sent = await produce(process.env.KAFKA_BROKERS.split(","), recognitions, { structured });
  const partitions = sent.map((s) => s.partition).sort((a, b) => a - b).join(", ");
  console.log(`${recognitions.length} recognitions acknowledged on ${TOPIC}, partitions ${partitions}`);
}
