'use strict';
// A proxyless gRPC client built on @grpc/grpc-js-xds, driven by the e2e/xds tests: one JSON
// request a line on stdin, one JSON reply a line on stdout, in order. Its xDS bootstrap comes
// from GRPC_XDS_BOOTSTRAP_CONFIG (the process has one xDS client, so one node and one ADS
// stream, shared by every channel it opens). Each RPC is grpc.health.v1.Health/Check; the
// backends name themselves in the x-backend response header.
//
// Requests (every field but op optional):
//   {"op":"call","target":"xds:///h.test","n":200,"concurrency":1,"metadata":{"k":"v"},
//    "deadline_ms":5000,"fresh":false}
//     n RPCs on the target's channel (fresh: on a new channel, closed afterwards) ->
//     {"ok":N,"backends":{"a":160,...},"errors":{"UNAVAILABLE":2},"messages":[...],"latency_ms":[...]}
//   {"op":"start","loop":"name","target":...,"workers":8,"metadata":...,"deadline_ms":...}
//     starts workers calling in a loop until stop -> {"started":"name"}
//   {"op":"stop","loop":"name"} -> the loop's totals, as for call
//   {"op":"close","target":...} closes the target's channel -> {"closed":true}
// A malformed request or an unexpected failure answers {"error":"..."}.

const grpc = require('@grpc/grpc-js');
const grpcXds = require('@grpc/grpc-js-xds');
const readline = require('readline');

grpcXds.register();

const METHOD = '/grpc.health.v1.Health/Check';
const IDENTITY_HEADER = 'x-backend';
const SERVING_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];
const CODE_NAMES = {};
for (const [name, code] of Object.entries(grpc.status)) {
  CODE_NAMES[code] = name;
}

function varint(n) {
  const out = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

// HealthCheckRequest { string service = 1; }
function serializeRequest(service) {
  if (!service) {
    return Buffer.alloc(0);
  }
  const s = Buffer.from(service, 'utf8');
  return Buffer.concat([Buffer.from([0x0a, ...varint(s.length)]), s]);
}

// HealthCheckResponse { ServingStatus status = 1; }: the fields this client needs, read from
// the wire format (unknown fields are skipped as protobuf requires).
function deserializeResponse(buf) {
  let status = 0;
  let i = 0;
  const readVarint = () => {
    let v = 0;
    let shift = 0;
    for (;;) {
      if (i >= buf.length) {
        throw new Error('truncated varint');
      }
      const b = buf[i++];
      v += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) {
        return v;
      }
      shift += 7;
    }
  };
  while (i < buf.length) {
    const key = readVarint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 0) {
      const v = readVarint();
      if (field === 1) {
        status = v;
      }
    } else if (wire === 2) {
      i += readVarint();
    } else if (wire === 1) {
      i += 8;
    } else if (wire === 5) {
      i += 4;
    } else {
      throw new Error(`unexpected wire type ${wire}`);
    }
  }
  if (i !== buf.length) {
    throw new Error('truncated message');
  }
  return { status: SERVING_STATUS[status] || String(status) };
}

const channels = new Map(); // target -> grpc.Client

function newClient(target) {
  return new grpc.Client(target, grpc.credentials.createInsecure());
}

function channelFor(target) {
  let c = channels.get(target);
  if (!c) {
    c = newClient(target);
    channels.set(target, c);
  }
  return c;
}

function newTally() {
  return { ok: 0, backends: {}, errors: {}, messages: [], latency_ms: [] };
}

function note(tally, key, message) {
  tally.errors[key] = (tally.errors[key] || 0) + 1;
  if (tally.messages.length < 10 && !tally.messages.includes(message)) {
    tally.messages.push(message);
  }
}

// One Health/Check; resolves (never rejects) once the call ends, recording it in tally.
function callOnce(client, req, tally) {
  return new Promise((resolve) => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(req.metadata || {})) {
      md.add(k, String(v));
    }
    const deadline = new Date(Date.now() + (req.deadline_ms || 5000));
    const start = process.hrtime.bigint();
    let backend = '';
    const call = client.makeUnaryRequest(METHOD, serializeRequest, deserializeResponse, req.service || '', md, { deadline },
      (err, res) => {
        const ms = Number(process.hrtime.bigint() - start) / 1e6;
        tally.latency_ms.push(Math.round(ms * 1000) / 1000);
        if (err) {
          const name = CODE_NAMES[err.code] || String(err.code);
          note(tally, name, `${name}: ${err.details}`);
        } else if (res.status !== 'SERVING') {
          note(tally, 'NOT_SERVING_RESPONSE', `health status ${res.status} from ${backend || 'no backend'}`);
        } else {
          tally.ok++;
          const key = backend || '';
          tally.backends[key] = (tally.backends[key] || 0) + 1;
        }
        resolve();
      });
    call.on('metadata', (m) => {
      const v = m.get(IDENTITY_HEADER);
      if (v.length > 0) {
        backend = String(v[0]);
      }
    });
  });
}

async function runCalls(req) {
  if (!req.target) {
    throw new Error('call: target is required');
  }
  const n = req.n === undefined ? 1 : req.n;
  const concurrency = Math.max(1, req.concurrency || 1);
  const client = req.fresh ? newClient(req.target) : channelFor(req.target);
  const tally = newTally();
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      await callOnce(client, req, tally);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(n, 1)) }, worker));
  } finally {
    if (req.fresh) {
      client.close();
    }
  }
  return tally;
}

const loops = new Map(); // name -> { stop: boolean, tally, done: Promise }

function startLoop(req) {
  if (!req.loop || !req.target) {
    throw new Error('start: loop and target are required');
  }
  if (loops.has(req.loop)) {
    throw new Error(`start: loop ${req.loop} is running`);
  }
  const client = channelFor(req.target);
  const state = { stop: false, tally: newTally() };
  const worker = async () => {
    while (!state.stop) {
      await callOnce(client, req, state.tally);
    }
  };
  state.done = Promise.all(Array.from({ length: Math.max(1, req.workers || 1) }, worker));
  loops.set(req.loop, state);
  return { started: req.loop };
}

async function stopLoop(req) {
  const state = loops.get(req.loop);
  if (!state) {
    throw new Error(`stop: no loop ${req.loop}`);
  }
  state.stop = true;
  await state.done;
  loops.delete(req.loop);
  return state.tally;
}

async function handle(req) {
  switch (req.op) {
    case 'call':
      return runCalls(req);
    case 'start':
      return startLoop(req);
    case 'stop':
      return stopLoop(req);
    case 'close': {
      const c = channels.get(req.target);
      if (c) {
        c.close();
        channels.delete(req.target);
      }
      return { closed: true };
    }
    default:
      throw new Error(`unknown op ${JSON.stringify(req.op)}`);
  }
}

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// Requests are answered one at a time, in the order they came.
let queue = Promise.resolve();
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', (line) => {
  queue = queue.then(async () => {
    let req;
    try {
      req = JSON.parse(line);
    } catch (e) {
      reply({ error: `bad request: ${e.message}` });
      return;
    }
    try {
      reply(await handle(req));
    } catch (e) {
      reply({ error: e.message });
    }
  });
});
// The test closes stdin to end the process (or kills it).
rl.on('close', () => {
  queue.then(() => {
    for (const state of loops.values()) {
      state.stop = true;
    }
    for (const c of channels.values()) {
      c.close();
    }
    process.exit(0);
  });
});

// A bootstrap grpc-js refuses would only show as every call failing; say why at once.
try {
  require('@grpc/grpc-js-xds/build/src/xds-bootstrap').loadBootstrapInfo();
} catch (e) {
  reply({ error: `xDS bootstrap: ${e.message}` });
  process.exit(1);
}

const versions = {};
for (const p of ['@grpc/grpc-js/package.json', '@grpc/grpc-js-xds/package.json']) {
  const pkg = require(p);
  versions[pkg.name] = pkg.version;
}
reply({ ready: true, node: process.version, versions });
