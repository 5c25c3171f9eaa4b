// Runs calls through the official @amplitude/node SDK, one client after the other.
// Usage: node amplitude.js SPEC, where SPEC is JSON:
//   {"apiKey": "...", "clients": [{"options": {"serverUrl": "...", "minIdLength": 3},
//    "middleware": ["enrich", "dropTests"], "calls": [["logEvent", {...}, extra], ...]}]}
// Each client logs its calls, then flushes: one request per client (and its retries).
'use strict';

const Amplitude = require('@amplitude/node');

// The middleware the tests name, as the SDK's documentation writes them; the Python
// tests define the same two for spooler's client.
const MIDDLEWARE = {
  enrich: (payload, next) => {
    payload.event.event_properties = { ...payload.event.event_properties, source: payload.extra };
    next(payload);
  },
  dropTests: (payload, next) => {
    if (payload.event.event_type !== 'test') {
      next(payload);
    }
  },
};

async function main() {
  const spec = JSON.parse(process.argv[2]);
  for (const { options, middleware = [], calls } of spec.clients) {
    const client = Amplitude.init(spec.apiKey, options);
    for (const name of middleware) {
      client.addEventMiddleware(MIDDLEWARE[name]);
    }
    // logEvent's promise settles when its event is sent: log them all, then flush.
    const logged = calls.map(([method, ...args]) => client[method](...args));
    await client.flush();
    await Promise.all(logged);
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
