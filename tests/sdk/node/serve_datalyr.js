// Sends events through the reference build of @datalyr/api 1.3.0 to spooler serve, and
// prints one line per event the SDK was told succeeded: {"acked": N, "eventId": "..."}.
// Usage: node serve_datalyr.js SPEC, SPEC being JSON:
//   {"sdk": "<path of datalyr-api-1.3.0>", "apiKey": "dk_...",
//    "host": "http://127.0.0.1:PORT/track", "count": 300, "perFlush": 10,
//    "relayPid": PID, "killAfter": 100}
// The SDK judges an answer by response.ok alone; fetch is watched to see the answers it
// got, so an event counts as acknowledged exactly when the SDK took it as sent. At the
// killAfter-th acknowledgement the relay is killed -9 there and then, before the SDK
// sees the answer: a relay that answered before its commit returned dies uncommitted.
'use strict';

const spec = JSON.parse(process.argv[2]);
const { Datalyr } = require(spec.sdk);

const realFetch = globalThis.fetch;
let acknowledged = 0;
globalThis.fetch = async (url, init) => {
  const response = await realFetch(url, init);
  if (response.ok) {
    acknowledged += 1;
    if (acknowledged === spec.killAfter) process.kill(spec.relayPid, 'SIGKILL');
    const event = JSON.parse(init.body);
    console.log(JSON.stringify({ acked: event.properties.n, eventId: event.eventId }));
  }
  return response;
};

async function main() {
  const datalyr = new Datalyr({
    apiKey: spec.apiKey,
    host: spec.host,
    flushAt: 100,
    flushInterval: 3600000,
    retryLimit: 0,
    timeout: 2000,
    closeTimeout: 2000,
  });
  for (let start = 0; start < spec.count; start += spec.perFlush) {
    for (let n = start; n < Math.min(start + spec.perFlush, spec.count); n += 1) {
      await datalyr.track({ userId: 'user_1234', event: 'serve test', properties: { n } });
    }
    await datalyr.flush();
  }
  await datalyr.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
