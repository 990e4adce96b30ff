// Publish one CompletionRequest to the llm-pipeline over Kafka and await its CompletionReply.
//
//   npm ci && node request-reply.mjs [task_type] [text]
//
// The contract is the JSON Schemas in ../../schemas (completion_request, completion_reply,
// completion_chunk); this file only builds a request that satisfies it and reads the reply.
// It reads replies from a reply topic of its own (<PIPELINE_TOPIC_REPLIES>.<TENANT>.node-<id>, allowed
// by the pipeline's default PIPELINE_ALLOWED_REPLY_TOPICS={replies}.{tenant},{replies}.{tenant}.*:
// a tenant may reply only to its own topics), created before publishing and
// read from its beginning, so no reply can be missed or taken by another reader. Deleted at
// exit unless REPLY_TOPIC names a topic you keep.
//
// Environment: KAFKA_BOOTSTRAP_SERVERS (127.0.0.1:9092), PIPELINE_TOPIC_REQUESTS (llm.requests),
// PIPELINE_TOPIC_REPLIES (llm.replies), REPLY_TOPIC, TIMEOUT_MS (60000), TENANT (default), PIPELINE_TENANT_SIGNING_KEY (the tenant's key
// when the pipeline runs PIPELINE_TENANT_AUTH=signature: see sign() below and docs/security.md).
// Prints the reply JSON; exit 0 on status ok, 1 on an error reply, 3 on timeout.

import { createHmac, randomUUID } from "node:crypto";
import { Kafka, logLevel } from "kafkajs";

const brokers = (process.env.KAFKA_BOOTSTRAP_SERVERS || "127.0.0.1:9092").split(",");
const requestsTopic = process.env.PIPELINE_TOPIC_REQUESTS || "llm.requests";
const ownTopic = !process.env.REPLY_TOPIC;
const repliesPrefix = `${process.env.PIPELINE_TOPIC_REPLIES || "llm.replies"}.${process.env.TENANT || "default"}`;
const replyTopic = process.env.REPLY_TOPIC || `${repliesPrefix}.node-${randomUUID().slice(0, 8)}`;
const timeoutMs = Number(process.env.TIMEOUT_MS || 60000);
const [taskType = "summarize", text = "Summarise: Kafka is a distributed commit log."] = process.argv.slice(2);

const kafka = new Kafka({ clientId: "llm-pipeline-node-example", brokers, logLevel: logLevel.WARN });

// The x-pipeline-signature header: HMAC-SHA256 with the tenant's key over
// "v1:" + the key's length (4 bytes, big-endian) + key + value, exactly the bytes published.
function sign(secret, key, value) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(key.length);
  const mac = createHmac("sha256", secret).update(Buffer.concat([Buffer.from("v1:"), len, key, value]));
  return `v1=${mac.digest("hex")}`;
}

async function withAdmin(fn) {
  const admin = kafka.admin();
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.disconnect();
  }
}

async function main() {
  await withAdmin((admin) => admin.createTopics({ topics: [{ topic: replyTopic, numPartitions: 1 }], waitForLeaders: true }));
  const requestId = `node-${randomUUID()}`;
  const consumer = kafka.consumer({ groupId: `${replyTopic}.reader` });
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  try {
    await consumer.connect();
    await consumer.subscribe({ topic: replyTopic, fromBeginning: true });
    let timer;
    const reply = new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no reply for request ${requestId} within ${timeoutMs} ms`)), timeoutMs);
      consumer.run({
        eachMessage: async ({ message }) => {
          const body = JSON.parse(message.value.toString("utf8"));
          if (body.type === "chunk" || body.request_id !== requestId) return; // chunks, other requests
          resolve(body);
        },
      });
    });

    const request = {
      schema_version: 1,
      request_id: requestId, // the idempotency key: publish again with the same id to retry safely
      task_type: taskType,
      tenant: process.env.TENANT || "default",
      messages: [{ role: "user", content: text }],
      reply_to: replyTopic,
      metadata: { client: "node-example" },
    };
    const key = Buffer.from(requestId, "utf8");
    const value = Buffer.from(JSON.stringify(request), "utf8"); // signed and sent as these very bytes
    const headers = { correlation_id: requestId };
    if (process.env.PIPELINE_TENANT_SIGNING_KEY) {
      headers["x-pipeline-signature"] = sign(process.env.PIPELINE_TENANT_SIGNING_KEY, key, value);
    }
    await producer.connect();
    await producer.send({ topic: requestsTopic, acks: -1, messages: [{ key, value, headers }] });

    try {
      const body = await reply;
      console.log(JSON.stringify(body));
      return body.status === "ok" ? 0 : 1;
    } catch (err) {
      console.error(err.message);
      return 3;
    } finally {
      clearTimeout(timer);
    }
  } finally {
    await producer.disconnect();
    await consumer.disconnect();
    if (ownTopic) await withAdmin((admin) => admin.deleteTopics({ topics: [replyTopic] }));
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(2);
  },
);
