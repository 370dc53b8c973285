"""Sends COUNT track events with a real Python SDK, as an application would, and exits non-zero
if the SDK reported any error. Used by engine/tests/sdks.rs; deploy/lib.sh installs the SDKs.

    python3 send.py segment|rudder URL WRITE_KEY COUNT PREFIX

Event i: messageId PREFIX-i, anonymousId PREFIX-anon, userId PREFIX-user on odd i, event
"SDK Event", properties {index: i}, timestamp 2023-11-14T22:13:20 (naive: the SDKs send it
without an offset, which means UTC) + i seconds.
"""
import datetime
import sys

sdk, url, write_key, count, prefix = sys.argv[1:6]
count = int(count)
errors = []
if sdk == "segment":
    import segment.analytics as analytics

    analytics.host = url
else:
    import rudderstack.analytics as analytics

    analytics.dataPlaneUrl = url
analytics.write_key = write_key
analytics.max_retries = 2
analytics.on_error = lambda error, items: errors.append(repr(error))
base = datetime.datetime(2023, 11, 14, 22, 13, 20)
for i in range(count):
    analytics.track(
        user_id=f"{prefix}-user" if i % 2 else None,
        anonymous_id=f"{prefix}-anon",
        event="SDK Event",
        properties={"index": i},
        timestamp=base + datetime.timedelta(seconds=i),
        message_id=f"{prefix}-{i}",
    )
analytics.flush()
analytics.shutdown()
if errors:
    print(f"{sdk}: SDK reported errors: {errors[:5]}", file=sys.stderr)
    sys.exit(1)
print(f"{sdk}: {count} events sent, no SDK error")
