// Runs calls through the official @datalyr/api SDK, one request at a time, in order.
// Usage: node datalyr.js SPEC, where SPEC is JSON:
//   {"sdk": "<path of datalyr-api-1.3.0>", "apiKey": "dk_...", "host": "http://.../track",
//    "calls": [["track", "user_1", "signup", {...}], ["identify", null], ...]}
// Prints one JSON line per call: {"ok": true} or {"error": "<message>"}.
'use strict';

const spec = JSON.parse(process.argv[2]);
const { Datalyr } = require(spec.sdk);

async function main() {
  const datalyr = new Datalyr({ apiKey: spec.apiKey, host: spec.host, flushInterval: 3600000 });
  for (const [method, ...args] of spec.calls) {
    try {
      await datalyr[method](...args);
      await datalyr.flush(); // this call's request ends before the next call's starts
      console.log(JSON.stringify({ ok: true }));
    } catch (error) {
      console.log(JSON.stringify({ error: error.message }));
    }
  }
  await datalyr.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
