// Sends events through the official @amplitude/node SDK to spooler serve, and prints one
// line per event the SDK was told succeeded: {"acked": N}.
// Usage: node serve_amplitude.js SPEC, SPEC being JSON:
//   {"apiKey": "...", "serverUrl": "http://127.0.0.1:PORT/2/httpapi", "count": 500,
//    "perFlush": 10, "minIdLength": 3, "relayPid": PID, "killAfter": 100}
// Each group of perFlush events is logged, then flushed; the SDK retries as it does by
// default, but briefly (the relay may have been killed): a retried event that got
// through only later is not counted, as logEvent's promise says only the first answer.
// Once killAfter events are acknowledged, the relay is killed -9 from the promise that
// told of the last one: a relay that answered before its commit returned dies uncommitted.
'use strict';

const Amplitude = require('@amplitude/node');

async function main() {
  const spec = JSON.parse(process.argv[2]);
  let acknowledged = 0;
  const client = Amplitude.init(spec.apiKey, {
    serverUrl: spec.serverUrl,
    minIdLength: spec.minIdLength,
    retryTimeouts: [50, 100],
    requestTimeoutMillis: 2000,
  });
  for (let start = 0; start < spec.count; start += spec.perFlush) {
    const logged = [];
    for (let n = start; n < Math.min(start + spec.perFlush, spec.count); n += 1) {
      const event = { event_type: 'serve test', user_id: 'user_1234', event_properties: { n } };
      logged.push(
        client.logEvent(event).then(
          (response) => {
            if (response.status !== 'success') return;
            acknowledged += 1;
            if (acknowledged === spec.killAfter) process.kill(spec.relayPid, 'SIGKILL');
            console.log(JSON.stringify({ acked: n }));
          },
          () => {},
        ),
      );
    }
    await client.flush().catch(() => {});
    await Promise.all(logged);
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
