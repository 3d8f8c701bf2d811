"""A Kafka client independent of modelgate (librdkafka via confluent-kafka)
for tests against the tansu broker of tests/src/kafka.rs.

  produce --bootstrap HOST:PORT --topic T --count N
      N messages (key k<i>, value {"i": i}) with acks=all and
      enable.idempotence=true; prints {"delivered": N, "partitions": {...}}.
  consume --bootstrap HOST:PORT --topic T --count N [--timeout S]
      reads from the earliest offset in a fresh group until N messages or S
      seconds; prints {"messages": [{"key", "value", "headers", "partition",
      "offset"}, ...]} (value as text, or value_b64 when not UTF-8).

Exits non-zero with the client's error on stderr when Kafka says no.
"""

import argparse
import base64
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, Producer


def text_or_b64(raw, name):
    if raw is None:
        return {name: None}
    try:
        return {name: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {name + "_b64": base64.b64encode(raw).decode("ascii")}


def produce(args):
    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            # A busy machine: let librdkafka retry for a long while instead
            # of failing a message early.
            "message.timeout.ms": args.timeout * 1000,
        }
    )
    errors, partitions = [], {}

    def delivered(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            partitions[msg.partition()] = partitions.get(msg.partition(), 0) + 1

    for i in range(args.count):
        while True:
            try:
                producer.produce(args.topic, key=f"k{i}", value=json.dumps({"i": i}), on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(args.timeout)
    if errors or left:
        print(f"produce failed: {left} undelivered, errors: {errors[:5]}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"delivered": sum(partitions.values()), "partitions": partitions}))


def consume(args):
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"test-{uuid.uuid4()}",
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
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            print(f"consume failed: {err}", file=sys.stderr)
            sys.exit(1)
        entry = {"partition": msg.partition(), "offset": msg.offset()}
        entry.update(text_or_b64(msg.key(), "key"))
        entry.update(text_or_b64(msg.value(), "value"))
        entry["headers"] = {k: (v.decode("utf-8", "replace") if v is not None else None) for k, v in msg.headers() or []}
        messages.append(entry)
    consumer.close()
    print(json.dumps({"messages": messages}))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("produce", "consume"):
        p = sub.add_parser(name)
        p.add_argument("--bootstrap", required=True)
        p.add_argument("--topic", required=True)
        p.add_argument("--count", type=int, required=True)
        p.add_argument("--timeout", type=int, default=90)
    args = parser.parse_args()
    {"produce": produce, "consume": consume}[args.command](args)


if __name__ == "__main__":
    main()
