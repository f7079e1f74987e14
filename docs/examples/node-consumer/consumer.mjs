// Follow Airlock run events with a durable JetStream consumer (Node.js 18+, npm package "nats").
//
//   npm ci && NATS_URL=nats://127.0.0.1:4222 node consumer.mjs
//
// Everything here comes from docs/events.md: the stream and subjects, the JSON payload, the
// headers, the per-run sequence, and the consumer settings recommended there.
import process from "node:process";
import { AckPolicy, DeliverPolicy, NatsError, connect, nanos } from "nats";

const env = process.env;
const NATS_URL = env.NATS_URL ?? "nats://127.0.0.1:4222";
const STREAM = env.AIRLOCK_NATS_STREAM ?? "AIRLOCK_RUNS";
const SUBJECTS = env.SUBJECTS ?? "airlock.runs.>"; // e.g. "airlock.runs.*.succeeded"
const DURABLE = env.DURABLE ?? "my-backend"; // one name per consuming service
const DELIVER = env.DELIVER ?? "all"; // first start only: "all" (what the stream holds) or "new"
const ACK_WAIT_MS = Number(env.ACK_WAIT_MS ?? 30_000); // longer than the slowest handler
const MAX_ACK_PENDING = Number(env.MAX_ACK_PENDING ?? 1); // 1: strict order, even on redelivery
const MAX_EVENTS = Number(env.MAX_EVENTS ?? 0); // stop after this many (0: never)

// Final states: a run's last event. No event follows one of these for that run.
const FINAL = new Set([
  "RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_TIMED_OUT", "RUN_STATE_OOM_KILLED",
  "RUN_STATE_CANCELLED", "RUN_STATE_REJECTED", "RUN_STATE_EXPIRED",
]);

const lastSeq = new Map(); // run_id -> last sequence handled (keep it in your database)

async function handle(event, traceparent) {
  // Be idempotent on event.event_id: a repeat is possible after a relay crash.
  const final = FINAL.has(event.state) ? "final" : "-"; // the run is over
  console.log(event.event_id, event.state, final, traceparent || "-", JSON.stringify(event.reason));
}

async function main() {
  const nc = await connect({ servers: NATS_URL.split(","), name: `airlock-consumer-${DURABLE}` });
  let stopping = false;
  for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => { stopping = true; });
  try {
    // Create the durable consumer (the same config again is accepted as is).
    const jsm = await nc.jetstreamManager();
    await jsm.consumers.add(STREAM, {
      durable_name: DURABLE,
      filter_subject: SUBJECTS,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DELIVER === "new" ? DeliverPolicy.New : DeliverPolicy.All,
      ack_wait: nanos(ACK_WAIT_MS),
      max_ack_pending: MAX_ACK_PENDING,
    });
    const consumer = await nc.jetstream().consumers.get(STREAM, DURABLE);
    let seen = 0;
    while (!stopping && (!MAX_EVENTS || seen < MAX_EVENTS)) {
      const batch = MAX_EVENTS ? Math.min(100, MAX_EVENTS - seen) : 100;
      // Exactly as many as still wanted: nothing is left delivered but unacknowledged.
      const msgs = await consumer.fetch({ max_messages: batch, expires: 5_000 });
      for await (const m of msgs) {
        const schema = m.headers?.get("Airlock-Schema") ?? "";
        const event = m.json();
        if (event.schema_version !== 1) {
          // A version this code does not know: leave it for an upgraded consumer.
          console.error(`unknown ${schema} (schema_version ${event.schema_version})`);
          m.nak(60_000);
          continue;
        }
        const last = lastSeq.get(event.run_id) ?? 0;
        if (event.sequence <= last) { // a repeat: already handled
          await m.ackAck();
          continue;
        }
        if (last && event.sequence !== last + 1) {
          console.error(`gap in ${event.run_id}: ${last} then ${event.sequence}`);
        }
        await handle(event, m.headers?.get("traceparent") ?? "");
        lastSeq.set(event.run_id, event.sequence);
        await m.ackAck(); // only after handling (a crash before this redelivers it)
        seen += 1;
        if (MAX_EVENTS && seen >= MAX_EVENTS) break;
      }
    }
  } finally {
    await nc.drain();
  }
}

main().catch((e) => {
  console.error(e instanceof NatsError ? `NATS: ${e.message}` : e);
  process.exit(1);
});
