// A program in another language that meets the engine only through
// docs/wire.md: it starts workflows over raw NATS (a JSON start and a CBOR
// start), serves their activities as a worker on the durable consumers
// `activity-{name}`, signals them, and reads their results from the
// WORKFLOW_STATES bucket. tests/interop/test_node_worker.py registers the
// definitions, runs an orchestrator, runs this program and checks what it
// prints.
//
// Usage: node interop.mjs '<config as JSON>'
//   url       the NATS server
//   run       a tag that makes this run's instance ids unique
//   ack_wait  seconds: the ack wait of the consumers this program creates
//   slow      seconds the activity `js_slow` runs (longer than ack_wait, so
//             that only its keep-alives keep the task from coming back)
//   deadline  seconds the whole run may take
//
// It prints one line of JSON: every instance's end (status, output, error),
// every task it ran (with its delivery count and keep-alives), and the
// broker's answers to its starts and signals. It exits 0 once every instance
// has ended, 1 at the deadline or on an error (after printing what it saw).

import { AckPolicy, DeliverPolicy, ErrorCode, connect, nanos } from "nats";
import { decode, encode } from "cbor-x";

const config = JSON.parse(process.argv[2] ?? "{}");
for (const field of ["url", "run", "ack_wait", "slow", "deadline"]) {
  if (config[field] === undefined) {
    throw new Error(`config field ${field} is missing`);
  }
}

// -- the wire contract, as docs/wire.md states it ---------------------------

const EVENTS_STREAM = "WORKFLOW_EVENTS";
const TASKS_STREAM = "ACTIVITY_TASKS";
const STATES_BUCKET = "WORKFLOW_STATES";
const DEADLETTER_STREAM = "WORKFLOW_DEADLETTERS";
const TERMINAL = new Set(["completed", "failed", "cancelled", "terminated"]);

/** A CBOR envelope: a map of exactly `version`, `kind` and `body`. */
function envelope(kind, body) {
  return encode({ version: 1, kind, body });
}

/** The body of a CBOR envelope of the expected kind; throws otherwise. */
function openEnvelope(data, kind) {
  const message = decode(data);
  if (message === null || typeof message !== "object" || message.version !== 1) {
    throw new Error(`not a version 1 envelope: ${JSON.stringify(message)}`);
  }
  if (message.kind !== kind) {
    throw new Error(`expected a ${kind} envelope, got ${message.kind}`);
  }
  return message.body;
}

const json = (value) => new TextEncoder().encode(JSON.stringify(value));

/** An error as a failed result carries it. */
class ActivityFailure extends Error {
  constructor(type, message, nonRetryable) {
    super(message);
    this.type = type;
    this.nonRetryable = nonRetryable;
  }
}

// -- the activities this program serves --------------------------------------

const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

const ACTIVITIES = {
  async js_greet(input) {
    return { greeting: `hello, ${input.name}`, runtime: "node" };
  },
  async js_flaky(input, task) {
    if (task.attempt === 1) {
      throw new ActivityFailure("Flaky", "the first attempt fails on purpose", false);
    }
    return { attempt: task.attempt, seen: input };
  },
  async js_slow(input) {
    await sleep(input.seconds);
    return { slept: input.seconds };
  },
  async js_refuse() {
    throw new ActivityFailure("Refused", "this input is refused for good", true);
  },
};

// -- the worker ------------------------------------------------------------------

const report = {
  instances: {},
  tasks: [],
  starts: [],
  signals: [],
  deadletters: [],
  errors: [],
};

/**
 * Bind to the durable consumer `activity-{name}`, creating it with the
 * settings wire.md gives if no worker has yet. Returns the pull consumer and
 * the ack wait in force, which paces the keep-alives.
 */
async function activityConsumer(js, jsm, name) {
  const durable = `activity-${name}`;
  let info;
  try {
    info = await jsm.consumers.info(TASKS_STREAM, durable);
  } catch (error) {
    if (error?.api_error?.err_code !== 10014) {
      throw error; // anything but "consumer not found"
    }
    info = await jsm.consumers.add(TASKS_STREAM, {
      durable_name: durable,
      filter_subject: `activity.tasks.${name}`,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(config.ack_wait * 1000),
      max_deliver: -1,
      max_ack_pending: 10000,
    });
  }
  const ackWait = info.config.ack_wait / 1e9;
  return { consumer: await js.consumers.get(TASKS_STREAM, durable), ackWait };
}

async function runTask(js, msg, ackWait) {
  const task = openEnvelope(msg.data, "activity.task");
  const record = {
    activity: task.activity,
    instance: task.instance,
    step: task.step,
    attempt: task.attempt,
    delivery: msg.info.deliveryCount,
    keepalives: 0,
  };
  report.tasks.push(record);
  // In progress every third of the ack wait, so the task does not come back
  // to another worker while it runs.
  const keepalive = setInterval(() => {
    msg.working();
    record.keepalives += 1;
  }, (ackWait * 1000) / 3);
  const result = { instance: task.instance, step: task.step, attempt: task.attempt };
  try {
    result.output = await ACTIVITIES[task.activity](task.input, task);
  } catch (error) {
    const known = error instanceof ActivityFailure;
    result.error = {
      type: known ? error.type : error.constructor.name,
      message: error.message,
      traceback: error.stack ?? "",
      non_retryable: known ? error.nonRetryable : false,
    };
  } finally {
    clearInterval(keepalive);
  }
  const outcome = result.error === undefined ? "completed" : "failed";
  // The step's key goes into the subject and the message id as it is. The
  // message id makes a repeated publish harmless, so a publish whose answer
  // is late (a loaded machine) is tried again rather than given up.
  await patiently(() =>
    js.publish(
      `instance.${task.instance}.${outcome}.${task.step}`,
      envelope("activity.result", result),
      { msgID: `result.${task.instance}.${task.step}.${task.attempt}`, timeout: ANSWER_MS },
    ),
  );
  // Only once the broker has stored the result; acking twice is harmless too.
  await patiently(() => msg.ackAck({ timeout: ANSWER_MS }));
  record.outcome = outcome;
}

/** How long one request to the server may wait for its answer. */
const ANSWER_MS = 10_000;

/**
 * Run `request` (an idempotent request to the server) until it is answered:
 * a timeout is tried again, up to four times; any other error is thrown.
 */
async function patiently(request) {
  for (let tries = 1; ; tries += 1) {
    try {
      return await request();
    } catch (error) {
      if (tries >= 4 || error?.code !== ErrorCode.Timeout) throw error;
    }
  }
}

async function serve(js, jsm, name) {
  const { consumer, ackWait } = await activityConsumer(js, jsm, name);
  const messages = await consumer.consume({ max_messages: 8 });
  (async () => {
    for await (const msg of messages) {
      // Each task runs on its own, so that a slow one holds up no other.
      runTask(js, msg, ackWait).catch((error) => {
        report.errors.push(`task on ${msg.subject}: ${error}`);
        msg.nak();
      });
    }
  })();
  return messages;
}

// -- a client: start, signal, read the result ------------------------------------

/**
 * Start an instance with a JSON body or a CBOR envelope; note the broker's answer.
 * A JSON start goes to the plain start subject (the engine files it under its
 * instance), a CBOR one to its instance's own subject.
 */
async function start(js, type, body, encoding) {
  const data = encoding === "json" ? json(body) : envelope("workflow.start", body);
  const subject =
    encoding === "json" ? `workflow.start.${type}` : `instance.${body.id}.start.${type}`;
  const ack = await patiently(() =>
    js.publish(subject, data, { msgID: `start.${body.id}`, timeout: ANSWER_MS }),
  );
  report.starts.push({ id: body.id, encoding, seq: ack.seq, duplicate: ack.duplicate });
}

/** Send signal `name` with a JSON body or a CBOR envelope; note the broker's answer. */
async function signal(js, id, name, payload, encoding) {
  const data =
    encoding === "json" ? json(payload) : envelope("workflow.signal", { payload });
  const ack = await patiently(() =>
    js.publish(`instance.${id}.signal.${name}`, data, {
      msgID: `signal.${id}.${name}`,
      timeout: ANSWER_MS,
    }),
  );
  report.signals.push({ id, encoding, seq: ack.seq, duplicate: ack.duplicate });
}

/** The instance's state as stored, each time it changes, until `until` says stop. */
async function watchState(kv, id, until) {
  const changes = await kv.watch({ key: id });
  try {
    for await (const entry of changes) {
      if (entry.operation !== "PUT") {
        continue;
      }
      const state = openEnvelope(entry.value, "instance.state");
      if (until(state)) {
        return state;
      }
    }
  } finally {
    changes.stop();
  }
  throw new Error(`the watch on ${id} ended`);
}

class DeadLetter extends Error {}

/**
 * Reject as soon as the engine dead-letters anything (a message of this
 * program that it refused, say), with the dead letter's reason; so a refusal
 * fails the run at once instead of at its deadline. An ordered consumer reads
 * the stream from its start and changes nothing on the broker.
 */
async function firstDeadLetter(js) {
  const consumer = await js.consumers.get(DEADLETTER_STREAM);
  const messages = await consumer.consume();
  const seen = (async () => {
    for await (const msg of messages) {
      const letter = openEnvelope(msg.data, "deadletter");
      report.deadletters.push({
        subject: letter.subject,
        reason: letter.reason,
        num_delivered: letter.num_delivered,
      });
      throw new DeadLetter(`dead letter from ${letter.subject}: ${letter.reason}`);
    }
  })();
  seen.catch(() => {}); // handled by whoever races it; never unhandled
  return { seen, messages };
}

async function main() {
  const nc = await connect({ servers: config.url, name: "interop-node" });
  const deadline = setTimeout(() => {
    report.errors.push(`deadline of ${config.deadline}s passed`);
    console.log(JSON.stringify(report));
    process.exit(1);
  }, config.deadline * 1000);
  try {
    const js = nc.jetstream();
    const jsm = await nc.jetstreamManager();
    // The engine creates its streams and buckets on first use; this program
    // creates none of them and fails plainly if they are not there yet.
    await jsm.streams.info(EVENTS_STREAM);
    await jsm.streams.info(TASKS_STREAM);
    const kv = await js.views.kv(STATES_BUCKET, { bindOnly: true });

    const deadLetters = await firstDeadLetter(js);
    const served = [];
    for (const name of Object.keys(ACTIVITIES)) {
      served.push(await serve(js, jsm, name));
    }

    const run = config.run;
    const ids = { json: `${run}-json`, cbor: `${run}-cbor`, refuse: `${run}-refuse` };
    const input = (name) => ({ name, seconds: config.slow });

    // A JSON start, then at once a JSON signal: an event for an instance
    // that is not stored yet waits for it. The same start again is dropped
    // by its message id.
    await start(js, "interop", { id: ids.json, input: input("json") }, "json");
    await start(js, "interop", { id: ids.json, input: input("json") }, "json");
    await signal(js, ids.json, "approved", { by: "json" }, "json");

    // A CBOR start naming its version, and a CBOR signal sent once the
    // instance is known to exist (its key is in the states bucket).
    await start(js, "interop", { id: ids.cbor, input: input("cbor"), version: 1 }, "cbor");
    await Promise.race([watchState(kv, ids.cbor, () => true), deadLetters.seen]);
    await signal(js, ids.cbor, "approved", { by: "cbor" }, "cbor");

    // A start whose only activity fails for good.
    await start(js, "interop_refuse", { id: ids.refuse, input: { why: "no" } }, "json");

    const ended = Promise.all(
      Object.values(ids).map(async (id) => {
        const state = await watchState(kv, id, (s) => TERMINAL.has(s.status));
        report.instances[id] = { status: state.status, output: state.output, error: state.error };
      }),
    );
    await Promise.race([ended, deadLetters.seen]);
    await deadLetters.messages.close();
    for (const messages of served) {
      await messages.close();
    }
  } catch (error) {
    report.errors.push(error instanceof DeadLetter ? error.message : String(error?.stack ?? error));
  } finally {
    await nc.drain();
    clearTimeout(deadline); // after the drain, so that a stuck drain meets it too
  }
  console.log(JSON.stringify(report));
  process.exit(report.errors.length === 0 ? 0 : 1);
}

await main();
