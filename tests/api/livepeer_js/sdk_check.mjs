// Calls the official Livepeer JS SDK (`livepeer` on npm) as its README shows, against the server
// named on stdin, and prints what the SDK made of each answer, for tests/api/test_sdk_integration.py.
//
// stdin: {"serverURL": "http://host:port/api", "calls": [{"name", "op", "apiKey", "args"}]}
//   op is a method of `livepeer.metrics`; args its argument (a request object, or for
//   getPublicViewership the playback id; for getRealtimeViewership [playbackId, creatorId,
//   breakdownBy], null for absent). from/to: numbers go as epoch ms, strings as Dates.
// stdout: one JSON line per call: {"name", "ok": true, "value": <the SDK's parsed result>} or
//   {"name", "ok": false, "error": <the SDK error's class>, "statusCode", "body", "message"}.
import { Livepeer } from "livepeer";

const input = JSON.parse(await new Promise((resolve) => {
  let text = "";
  process.stdin.on("data", (chunk) => (text += chunk));
  process.stdin.on("end", () => resolve(text));
}));

function request(args) {
  const out = { ...args };
  for (const name of ["from", "to"]) {
    if (typeof out[name] === "string") out[name] = new Date(out[name]);
  }
  return out;
}

for (const call of input.calls) {
  const sdk = new Livepeer({ apiKey: call.apiKey ?? undefined, serverURL: input.serverURL });
  const metrics = sdk.metrics;
  try {
    let result;
    if (call.op === "getPublicViewership") result = await metrics.getPublicViewership(call.args);
    else if (call.op === "getRealtimeViewership") {
      result = await metrics.getRealtimeViewership(...call.args.map((a) => a ?? undefined));
    }
    else result = await metrics[call.op](request(call.args));
    const { rawResponse, contentType, statusCode, ...parsed } = result;
    console.log(JSON.stringify({ name: call.name, ok: true, status: statusCode, value: parsed }));
  } catch (err) {
    console.log(JSON.stringify({
      name: call.name,
      ok: false,
      error: err.constructor.name,
      statusCode: err.statusCode ?? null,
      body: err.body ?? null,
      message: String(err.message).slice(0, 2000),
    }));
  }
}
