// Sends COUNT track events with a real Node SDK, as an application would, and exits non-zero
// if the SDK reported any error. Used by engine/tests/sdks.rs; deploy/lib.sh installs the SDKs.
//
//   node send.js segment|rudder URL WRITE_KEY COUNT PREFIX
//
// Event i: messageId PREFIX-i, anonymousId PREFIX-anon, userId PREFIX-user on odd i,
// event "SDK Event", properties {index: i}, timestamp 2023-11-14T22:13:20Z + i seconds.
const [sdk, url, writeKey, countText, prefix] = process.argv.slice(2);
const count = Number(countText);
const errors = [];
const base = Date.UTC(2023, 10, 14, 22, 13, 20);

function message(i) {
  return {
    messageId: `${prefix}-${i}`,
    anonymousId: `${prefix}-anon`,
    userId: i % 2 ? `${prefix}-user` : undefined,
    event: 'SDK Event',
    properties: { index: i },
    timestamp: new Date(base + i * 1000),
  };
}

async function segment() {
  const { Analytics } = require('@segment/analytics-node');
  const analytics = new Analytics({ writeKey, host: url, flushAt: 15, maxRetries: 2 });
  analytics.on('error', (error) => errors.push(String(error && (error.reason || error.message || error.code || error))));
  for (let i = 0; i < count; i++) analytics.track(message(i));
  await analytics.closeAndFlush({ timeout: 30000 });
}

async function rudder() {
  const Analytics = require('@rudderstack/rudder-sdk-node');
  // gzip is this SDK's default: keep it, it is what users run.
  const client = new Analytics(writeKey, {
    dataPlaneUrl: url,
    flushAt: 15,
    retryCount: 2,
    errorHandler: (error) => errors.push(String(error && (error.message || error))),
  });
  for (let i = 0; i < count; i++) {
    client.track(message(i), (error) => error && errors.push(String(error.message || error)));
  }
  await new Promise((resolve) =>
    client.flush((error) => {
      if (error) errors.push(String(error.message || error));
      resolve();
    }),
  );
}

(sdk === 'segment' ? segment() : rudder())
  .then(() => {
    if (errors.length) {
      console.error(`${sdk}: SDK reported errors: ${JSON.stringify(errors.slice(0, 5))}`);
      process.exit(1);
    }
    console.log(`${sdk}: ${count} events sent, no SDK error`);
  })
  .catch((error) => {
    console.error(error);
    process.exit(1);
  });
