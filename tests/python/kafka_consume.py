"""Reads back what the Kafka record sink wrote, with a client independent of
modelgate (librdkafka through confluent-kafka), for tests/tests/records_kafka.rs.

  kafka_consume.py --bootstrap HOST:PORT --topic T --count N [--timeout S]

Reads the topic from its earliest offsets in a fresh consumer group until N
messages arrived or S seconds passed, then prints one JSON object:
{"messages": [{"partition", "offset", "timestamp", "key", "value",
"headers"}, ...]}, where value is the message text. Exits non-zero with Kafka's error on
stderr when the broker says no.
"""

import argparse
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=90)
    args = parser.parse_args()

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"records-test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([args.topic])
    messages = []
    until = time.monotonic() + args.timeout
    while len(messages) < args.count and time.monotonic() < until:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        err = msg.error()
        if err is not None:
            if err.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                continue
            print(f"consume failed: {err}", file=sys.stderr)
            sys.exit(1)
        messages.append(
            {
                "partition": msg.partition(),
                "offset": msg.offset(),
                "timestamp": msg.timestamp()[1],
                "key": msg.key().decode("utf-8") if msg.key() is not None else None,
                "value": msg.value().decode("utf-8"),
                "headers": {k: v.decode("utf-8") for k, v in msg.headers() or []},
            }
        )
    consumer.close()
    print(json.dumps({"messages": messages}))


if __name__ == "__main__":
    main()
