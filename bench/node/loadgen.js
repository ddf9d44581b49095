#!/usr/bin/env node
// make bench's load generator: unary gRPC calls of pre-serialized request messages, one
// HTTP/2 connection.
//
//   node loadgen.js --target 127.0.0.1:50051 --path /pep.v1.Authorizer/Authorize \
//       --requests FILE [--mode closed|open] [--seconds 3] [--warmup 0.5] \
//       [--concurrency 16] [--rate 1000] [--per-call 1] [--unique MARKER] \
//       [--client http2|grpc-js]
//
// FILE holds one hex-encoded serialized request message per line, sent as is (no .proto
// files needed) and cycled. --client: http2 (default), Node's built-in http2 module speaking
// gRPC's wire protocol, or grpc-js (@grpc/grpc-js Client.makeUnaryRequest with identity
// serializers); the same bytes go out either way. http2 is the default because it costs
// about half the CPU per call of grpc-js (make bench's floor check prints both). --unique MARKER: every call stamps its
// own sequence number, zero-padded, over the digits of each occurrence of MARKER (an ASCII
// prefix then digits, e.g. "nr-000000000000") in a copy of the line, so every request names
// a resource never seen before; the length is unchanged, so the message stays valid.
//
// closed: --concurrency callers, each sending its next call when the last one answers.
// open: calls scheduled at a fixed --rate whatever the answers; latency is measured from
// each call's scheduled send time, so time spent queueing shows in the percentiles. Waits
// under 1.5 ms are spun (setImmediate) rather than left to a 1 ms timer, so sends are on
// time; the open loop's CPU figure therefore includes that spinning.
//
// Prints one JSON line: calls, decisions_per_s (calls x --per-call / s), p50_ms, p99_ms,
// mean_ms, errors (gRPC errors, by code in error_codes), loadgen_cpu (this process's user +
// system CPU over the measured window, as a fraction of one core), send_lag_p99_ms (open
// loop: how late sends went out), wrapped (true when the run used more lines than FILE has),
// completed_total (calls answered, warm-up included).
'use strict';

const fs = require('fs');
const { performance } = require('perf_hooks');

function parseArgs(argv) {
  const args = {
    mode: 'closed',
    seconds: 3,
    warmup: 0.5,
    warmupPasses: 0,
    concurrency: 16,
    rate: 1000,
    perCall: 1,
    unique: '',
    client: 'http2',
  };
  const names = {
    '--target': 'target',
    '--path': 'path',
    '--requests': 'requests',
    '--mode': 'mode',
    '--seconds': 'seconds',
    '--warmup': 'warmup',
    '--warmup-passes': 'warmupPasses',
    '--concurrency': 'concurrency',
    '--rate': 'rate',
    '--per-call': 'perCall',
    '--unique': 'unique',
    '--client': 'client',
  };
  for (let i = 2; i < argv.length; i += 2) {
    const key = names[argv[i]];
    if (!key || i + 1 >= argv.length) throw new Error(`bad argument ${argv[i]}`);
    const value = argv[i + 1];
    args[key] = typeof args[key] === 'number' ? Number(value) : value;
  }
  for (const required of ['target', 'path', 'requests']) {
    if (!args[required]) throw new Error(`--${required} is required`);
  }
  if (args.mode !== 'closed' && args.mode !== 'open') throw new Error('--mode: closed or open');
  if (args.client !== 'http2' && args.client !== 'grpc-js') throw new Error('--client: http2 or grpc-js');
  return args;
}

function markerOffsets(buffer, marker) {
  const offsets = [];
  for (let at = buffer.indexOf(marker); at !== -1; at = buffer.indexOf(marker, at + marker.length)) {
    offsets.push(at);
  }
  if (offsets.length === 0) throw new Error('--unique: a request line does not contain the marker');
  return offsets;
}

// grpc-js: Client.makeUnaryRequest with identity (de)serializers. The answer: a gRPC status
// code on error, else null.
function grpcJs(args) {
  const grpc = require('@grpc/grpc-js');
  const identity = (value) => value;
  const client = new grpc.Client(args.target, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': 16 * 1024 * 1024,
  });
  return {
    ready: (cb) => client.waitForReady(Date.now() + 30000, cb),
    call: (message, done) =>
      client.makeUnaryRequest(args.path, identity, identity, message, (err) => done(err ? err.code : null)),
    close: () => client.close(),
  };
}

// Node's own http2 speaking gRPC's wire protocol over one connection: a POST of the
// length-prefixed message (uncompressed), the status from grpc-status in the trailers (or the
// headers of a trailers-only answer). Any status but 0, a non-200 answer or a reset stream is
// an error ("http" or "reset" when there is no grpc-status).
function http2Client(args) {
  const http2 = require('http2');
  const session = http2.connect(`http://${args.target}`, { settings: { initialWindowSize: 1 << 20 } });
  session.on('error', (err) => {
    process.stderr.write(`loadgen: ${args.target}: ${err.message}\n`);
    process.exit(2);
  });
  const headers = {
    ':method': 'POST',
    ':path': args.path,
    'content-type': 'application/grpc',
    te: 'trailers',
    'user-agent': 'pep-bench-loadgen',
  };
  return {
    ready: (cb) => {
      const timer = setTimeout(() => cb(new Error('no connection in 30 s')), 30000);
      session.once('connect', () => {
        clearTimeout(timer);
        cb(null);
      });
    },
    call: (message, done) => {
      const framed = Buffer.allocUnsafe(5 + message.length);
      framed[0] = 0;
      framed.writeUInt32BE(message.length, 1);
      message.copy(framed, 5);
      const stream = session.request(headers);
      let status = null;
      stream.on('response', (h) => {
        if (h['grpc-status'] !== undefined) status = String(h['grpc-status']);
        else if (h[':status'] !== 200) status = 'http';
      });
      stream.on('trailers', (t) => {
        if (status === null || status === '0') status = String(t['grpc-status'] ?? 'http');
      });
      stream.on('error', () => {
        if (status === null) status = 'reset';
      });
      stream.on('close', () => done(status === '0' ? null : (status ?? 'reset')));
      stream.resume();
      stream.end(framed);
    },
    close: () => session.close(),
  };
}

function percentile(sorted, q) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function main() {
  const args = parseArgs(process.argv);
  const lines = fs
    .readFileSync(args.requests, 'utf8')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.length > 0)
    .map((line) => Buffer.from(line, 'hex'));
  if (lines.length === 0) throw new Error(`${args.requests}: no requests`);

  const marker = args.unique ? Buffer.from(args.unique, 'latin1') : null;
  const digits = marker ? marker.length - marker.toString('latin1').replace(/[0-9]+$/, '').length : 0;
  if (marker && digits === 0) throw new Error('--unique: the marker must end in digits');
  const offsets = marker ? lines.map((line) => markerOffsets(line, marker)) : null;

  let sequence = 0;
  function nextRequest() {
    const n = sequence++;
    const line = lines[n % lines.length];
    if (!marker) return line;
    const copy = Buffer.from(line);
    const stamp = String(n).padStart(digits, '0');
    for (const at of offsets[n % lines.length]) copy.write(stamp, at + marker.length - digits, 'latin1');
    return copy;
  }

  const errorCodes = {};
  let measuring = false;
  const latencies = [];
  let errors = 0;
  let completed = 0;
  const transport = args.client === 'grpc-js' ? grpcJs(args) : http2Client(args);

  function call(done) {
    transport.call(nextRequest(), (code) => {
      completed += 1;
      if (code !== null && measuring) {
        errors += 1;
        errorCodes[code] = (errorCodes[code] || 0) + 1;
      }
      done(code);
    });
  }

  // until: also go on until this many requests were sent (a warm-up of whole passes).
  function closedLoop(concurrency, stopAt, record, until = 0) {
    return new Promise((resolve) => {
      let active = concurrency;
      const worker = () => {
        if (performance.now() >= stopAt && sequence >= until) {
          active -= 1;
          if (active === 0) resolve();
          return;
        }
        const started = performance.now();
        call(() => {
          record(started);
          worker();
        });
      };
      for (let k = 0; k < concurrency; k++) worker();
    });
  }

  const lags = [];
  function openLoop(rate, start, stopAt, record) {
    return new Promise((resolve) => {
      const interval = 1000 / rate;
      let n = 0;
      let pending = 0;
      let sending = true;
      const tick = () => {
        const now = performance.now();
        for (;;) {
          const scheduled = start + n * interval;
          if (scheduled >= stopAt) {
            sending = false;
            break;
          }
          if (scheduled > now) break;
          n += 1;
          pending += 1;
          lags.push(now - scheduled);
          call(() => {
            record(scheduled);
            pending -= 1;
            if (pending === 0 && !sending) resolve();
          });
        }
        if (!sending) {
          if (pending === 0) resolve();
          return;
        }
        const wait = start + n * interval - performance.now();
        if (wait >= 1.5) setTimeout(tick, wait - 1);
        else setImmediate(tick);
      };
      tick();
    });
  }

  const watchdog = setTimeout(
    () => {
      process.stderr.write('loadgen: the run did not finish in time\n');
      process.exit(2);
    },
    (args.seconds + args.warmup + 60 + (Number(args.warmupPasses) > 0 ? 120 : 0)) * 1000,
  );

  transport.ready(async (err) => {
    if (err) {
      process.stderr.write(`loadgen: ${args.target} not ready: ${err.message}\n`);
      process.exit(2);
    }
    // Warm-up: the connection, the server's caches and lazy paths; with --warmup-passes N, also
    // N passes over the request file, so a server that remembers answers is measured warm.
    const passes = Number(args.warmupPasses) * lines.length;
    await closedLoop(args.concurrency, performance.now() + args.warmup * 1000, () => {}, passes);
    const warmupCalls = sequence;
    measuring = true;
    process.stderr.write('loadgen: measuring\n'); // bench/nodeload.py reads the server's CPU here
    const record = (from) => latencies.push(performance.now() - from);
    const cpuBefore = process.cpuUsage();
    const start = performance.now();
    const stopAt = start + args.seconds * 1000;
    if (args.mode === 'closed') await closedLoop(args.concurrency, stopAt, record);
    else await openLoop(args.rate, start, stopAt, record);
    const elapsed = performance.now() - start;
    const cpu = process.cpuUsage(cpuBefore);
    measuring = false;
    process.stderr.write('loadgen: measured\n'); // ... and here
    clearTimeout(watchdog);
    transport.close();

    const sorted = Float64Array.from(latencies).sort();
    const sortedLags = Float64Array.from(lags).sort();
    const calls = latencies.length;
    const result = {
      calls,
      decisions_per_s: (calls * args.perCall) / (elapsed / 1000),
      p50_ms: percentile(sorted, 0.5),
      p99_ms: percentile(sorted, 0.99),
      mean_ms: calls ? sorted.reduce((a, b) => a + b, 0) / calls : NaN,
      errors,
      error_codes: errorCodes,
      loadgen_cpu: (cpu.user + cpu.system) / 1000 / elapsed,
      send_lag_p99_ms: args.mode === 'open' ? percentile(sortedLags, 0.99) : 0,
      wrapped: sequence > lines.length && !marker,
      warmup_calls: warmupCalls,
      completed_total: completed,
      client: args.client,
    };
    process.stdout.write(JSON.stringify(result) + '\n');
  });
}

try {
  main();
} catch (err) {
  process.stderr.write(`loadgen: ${err.message}\n`);
  process.exit(2);
}
