#!/usr/bin/env python3
"""Attributes a server's CPU samples to the stages of a request.

Reads `perf script -F comm,tid,period,event,ip,sym,dso` output (cpu-clock
samples with call chains) on stdin and writes JSON: CPU per request by
stage and the hottest functions of each stage. Used by scripts/profile.sh.

A sample belongs to the innermost frame of its stack that names a stage of
the gateway's request path (decode, route, check, handoff, run,
window/metrics/spans, encode, or other gateway code); a sample with no such
frame belongs to the machinery every gRPC server has (HTTP/2, tokio,
sockets, allocator). Innermost wins so that, say, an allocation made while
decoding inputs counts as decoding, and a span wrapped around the whole
handler counts only for its own work.
"""

import argparse
import collections
import json
import re
import sys

# Stages of the request path, matched against each frame from the leaf up;
# in each frame the first matching stage wins. Symbols are Rust paths as
# perf demangles them (`<A as B>::f`, `mod::Type::f`).
STAGES = [
    ("run", [r"libonnxruntime", r"\bort::", r"LoadedModel::run", r"onnxruntime"]),
    ("window/metrics/spans", [
        r"prometheus_client", r"modelgate_telemetry", r"telemetry::metrics", r"\bwindow", r"Window",
        r"hdrhistogram", r"\btracing::", r"tracing_core", r"tracing_subscriber", r"tracing_opentelemetry",
        r"opentelemetry", r"server_span", r"in_request_span", r"Instrumented",
    ]),
    ("handoff", [
        r"modelgate_runtime::executor", r"modelgate_runtime::job", r"VersionQueue", r"crossbeam",
        r"tokio::sync::oneshot", r"std::thread::park", r"thread::Thread::unpark", r"Parker",
        r"modelgate_runtime::.*[Bb]atch",
    ]),
    ("check", [r"check_inputs", r"check_outputs", r"check_model", r"check_response_size", r"Signature::"]),
    ("route", [
        r"serving::routing", r"RoutingTable", r"ModelTable", r"modelgate_rollout::routing", r"arc_swap",
        r"outcome::RecentIds", r"Gateway::route",
    ]),
    ("decode", [
        r"inputs_from", r"tensor_from_pb", r"modelgate_proto::bounded", r"BoundedCodec.*Decoder",
        r"ProstDecoder", r"tonic::codec::decode", r"prost::encoding::.*merge", r"::merge_field",
        r"prost::message::Message::decode", r"request_id_or_new", r"deadline_of", r"header_routing_key",
        r"\buuid::",
    ]),
    ("encode", [
        r"tensor_to_pb", r"into_raw_bytes", r"ProstEncoder", r"tonic::codec::encode", r"EncodeBody",
        r"prost::encoding::.*encode", r"::encode_raw", r"encoded_len",
    ]),
    # Anything else of the server's own code: handler glue, the floor's
    # answer building.
    ("handler (other)", [r"\bmodelgate::", r"floor_server::"]),
]

# What every gRPC server pays, for samples with no stage frame.
MACHINERY = [
    ("kernel: sockets", [
        r"\btcp_", r"\bsock_", r"__sys_(send|recv)", r"sendmsg", r"recvmsg", r"sendto", r"recvfrom",
        r"\bip_", r"loopback_xmit", r"__dev_queue", r"net_rx", r"__netif", r"skb", r"\binet_",
    ]),
    ("gRPC/HTTP/2 (tonic, hyper, h2, tower)", [r"\bh2::", r"\bhyper::", r"\btonic::", r"\btower::", r"http_body", r"\bhttp::"]),
    ("tokio: scheduling, wake-ups, timers", [
        r"\btokio::", r"\bmio::", r"epoll", r"futex", r"schedule", r"eventfd", r"try_to_wake_up", r"finish_task_switch",
    ]),
    ("allocator", [r"malloc", r"\bfree\b", r"cfree", r"realloc", r"_int_free", r"_int_malloc", r"__libc_calloc"]),
]

STAGE_ORDER = [s for s, _ in STAGES] + [s for s, _ in MACHINERY] + ["kernel: other", "other"]


def compile_table(table):
    return [(name, re.compile("|".join(pats))) for name, pats in table]


def frames_of(lines):
    """(sym, dso) of each call-chain line, leaf first."""
    out = []
    for line in lines:
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            continue
        rest = parts[1]
        dso = ""
        if rest.endswith(")") and " (" in rest:
            rest, dso = rest.rsplit(" (", 1)
            dso = dso[:-1]
        out.append((rest, dso))
    return out


def classify(frames, stages, machinery):
    for table in (stages, machinery):
        for sym, dso in frames:
            text = f"{sym} {dso}"
            for name, rx in table:
                if rx.search(text):
                    return name
    if frames and "kernel" in frames[0][1]:
        return "kernel: other"
    return "other"


def short(sym):
    """A symbol without its hash and offset, for the hot-function lists."""
    sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
    return re.sub(r"::h[0-9a-f]{16}$", "", sym)


def samples(stream):
    """(comm, period_ns, frames) per sample."""
    header, chain = None, []
    for line in stream:
        if not line.strip():
            if header:
                yield header[0], header[1], frames_of(chain)
            header, chain = None, []
        elif line[0] in " \t":
            chain.append(line)
        else:
            # `comm tid period event:` (comm may contain spaces).
            m = re.match(r"^(.*?)\s+(\d+)\s+(\d+)\s+\S+:\s*$", line.rstrip("\n"))
            header = (m.group(1), int(m.group(3))) if m else None
            chain = []
    if header:
        yield header[0], header[1], frames_of(chain)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, required=True, help="requests served while recording")
    ap.add_argument("--top", type=int, default=6, help="hot functions listed per stage")
    args = ap.parse_args()
    stages, machinery = compile_table(STAGES), compile_table(MACHINERY)
    by_stage = collections.Counter()
    by_thread = collections.Counter()
    hot = collections.defaultdict(collections.Counter)
    n = 0
    for comm, period, frames in samples(sys.stdin):
        n += 1
        stage = classify(frames, stages, machinery)
        by_stage[stage] += period
        # Threads by kind: tokio workers, inference threads, the rest.
        by_thread[re.sub(r"[-_]?\d+$", "", comm)] += period
        if frames:
            hot[stage][short(frames[0][0])] += period
    total = sum(by_stage.values())
    per_req = lambda ns: ns / 1000 / max(args.requests, 1)
    json.dump({
        "samples": n,
        "requests": args.requests,
        "cpu_us_per_request": per_req(total),
        "stages": {s: per_req(by_stage[s]) for s in STAGE_ORDER if by_stage[s]},
        "threads": {t: per_req(ns) for t, ns in by_thread.most_common()},
        "hot": {s: [[f, per_req(ns)] for f, ns in hot[s].most_common(args.top)] for s in STAGE_ORDER if by_stage[s]},
    }, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
