#!/usr/bin/env python3
"""Drives modelgate's KServe v2 gRPC endpoint with NVIDIA's real Triton client.

    kserve_client.py <host:port> <golden-dir>

The gateway serves breast-cancer v1 and v2 (champion v2) with a canary of v1
running (tests/tests/kserve.rs starts it). Exits 0 and prints one JSON line of
what it saw, or exits 1 naming the first check that failed.
"""
import json
import sys
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

MODEL = "breast-cancer"
addr, golden_dir = sys.argv[1], Path(sys.argv[2])
seen = {}


def check(cond, what):
    if not cond:
        print(f"check failed: {what}", file=sys.stderr)
        sys.exit(1)


def load_golden(version):
    g = json.loads((golden_dir / f"breast-cancer-{version}.json").read_text())
    rows = np.array(g["inputs"]["input"]["data"], dtype=np.float32).reshape(g["inputs"]["input"]["shape"])
    probs = np.array(g["outputs"]["probabilities"]["data"], dtype=np.float32).reshape(-1, 2)
    labels = np.array(g["outputs"]["label"]["data"], dtype=np.int64)
    return rows, probs, labels


golden = {v: load_golden(v) for v in (1, 2)}
rows = golden[2][0]
client = tc.InferenceServerClient(url=addr)

# Health and metadata.
check(client.is_server_live(), "server live")
check(client.is_server_ready(), "server ready")
check(client.is_model_ready(MODEL), "model ready")
check(client.is_model_ready(MODEL, "1"), "version 1 ready")
check(not client.is_model_ready("no-such-model"), "an unknown model is not ready (and not an error)")
check(not client.is_model_ready(MODEL, "99"), "an unknown version is not ready")
meta = client.get_server_metadata(as_json=True)
check(meta["name"] == "modelgate" and meta["version"], f"server metadata {meta}")
seen["server_extensions"] = meta.get("extensions", [])
mm = client.get_model_metadata(MODEL, as_json=True)
check(mm["name"] == MODEL and mm["versions"] == ["1", "2"], f"model metadata {mm}")
check(mm["platform"] == "onnxruntime_onnx", f"platform {mm}")
inp = mm["inputs"][0]
check(inp["datatype"] == "FP32" and [int(d) for d in inp["shape"]] == [-1, 30], f"input {inp}")
outs = {o["name"]: (o["datatype"], [int(d) for d in o["shape"]]) for o in mm["outputs"]}
check(outs == {"label": ("INT64", [-1]), "probabilities": ("FP32", [-1, 2])}, f"outputs {outs}")
input_name = inp["name"]
index = client.get_model_repository_index(as_json=True)
seen["repository"] = sorted([m["name"], m["version"], m["state"]] for m in index["models"])
check(seen["repository"] == [[MODEL, "1", "READY"], [MODEL, "2", "READY"]], f"index {seen['repository']}")


def infer(data, version="", outputs=None, name=None, datatype="FP32", **kw):
    x = tc.InferInput(name or input_name, list(data.shape), datatype)
    x.set_data_from_numpy(data)
    req_outputs = [tc.InferRequestedOutput(o) for o in outputs] if outputs else None
    return client.infer(MODEL, [x], model_version=version, outputs=req_outputs, **kw)


# Raw inputs (tritonclient's way) on each pinned version, against its golden
# outputs. A pinned version keeps its role in the rollout.
for v, role in ((1, "canary"), (2, "champion")):
    want_rows, want_probs, want_labels = golden[v]
    r = infer(want_rows, version=str(v), request_id=f"raw-{v}", client_timeout=30)
    check(np.allclose(r.as_numpy("probabilities"), want_probs, atol=1e-5), f"v{v} raw: probabilities")
    check((r.as_numpy("label") == want_labels).all(), f"v{v} raw: labels")
    resp = r.get_response()
    check(resp.model_name == MODEL and resp.model_version == str(v), f"served {resp.model_version}")
    check(resp.id == f"raw-{v}", f"the request id is echoed: {resp.id!r}")
    check(resp.parameters["version"].int64_param == v, "version parameter")
    check(resp.parameters["role"].string_param == role, f"role parameter {resp.parameters['role']}")

# One requested output only.
r = infer(rows[:3], version="1", outputs=["label"])
check(r.as_numpy("probabilities") is None and r.as_numpy("label").shape == (3,), "only the requested output")
check(len(r.get_response().raw_output_contents) == 1, "one raw output")
check(len(r.get_response().id) == 32, "a generated request id comes back")

# Routed: the rollout decides, sticky on the routing_key parameter or the
# x-routing-key metadata (the Rust side compares with Predict's routing).
routed = {}
for i in range(60):
    key = f"user-{i}"
    r = infer(rows[:1], parameters={"routing_key": key}).get_response()
    h = infer(rows[:1], headers={"x-routing-key": key}).get_response()
    got = [int(r.model_version), r.parameters["role"].string_param]
    check(got == [int(h.model_version), h.parameters["role"].string_param], f"{key}: parameter vs header")
    check(r.parameters["version"].int64_param == got[0], f"{key}: version parameter")
    routed[key] = got
seen["routed"] = routed

# Typed contents, through Triton's own generated stub (tritonclient only sends raw).
stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(addr))
req = service_pb2.ModelInferRequest(model_name=MODEL, model_version="2", id="typed-1")
t = req.inputs.add(name=input_name, datatype="FP32", shape=list(rows.shape))
t.contents.fp32_contents.extend(rows.flatten().tolist())
typed = stub.ModelInfer(req, timeout=30)
check(typed.id == "typed-1" and typed.model_version == "2", "typed: id and version")
names = [o.name for o in typed.outputs]
check(len(typed.raw_output_contents) == len(names) == 2, f"typed: outputs {names}")
i = names.index("probabilities")
check(list(typed.outputs[i].shape) == [16, 2] and typed.outputs[i].datatype == "FP32", "typed: output metadata")
got = np.frombuffer(typed.raw_output_contents[i], dtype=np.float32).reshape(-1, 2)
check(np.allclose(got, golden[2][1], atol=1e-5), "typed: probabilities")


def status_of(fn):
    try:
        fn()
    except InferenceServerException as e:
        return e.status(), e.message()
    except grpc.RpcError as e:
        return str(e.code()), e.details()
    return None, None


def raw_request(raw, typed=None, datatype="FP32"):
    req = service_pb2.ModelInferRequest(model_name=MODEL)
    t = req.inputs.add(name=input_name, datatype=datatype, shape=[1, 30])
    if typed is not None:
        t.contents.fp32_contents.extend(typed)
    req.raw_input_contents.append(raw)
    return lambda: stub.ModelInfer(req, timeout=30)


bad = {
    "wrong_shape": lambda: infer(rows[:, :29]),
    "wrong_dtype": lambda: infer(rows.astype(np.float64), datatype="FP64"),
    "wrong_name": lambda: infer(rows, name="nope"),
    "empty_batch": lambda: infer(np.zeros((0, 30), dtype=np.float32)),
    "unknown_output": lambda: infer(rows, outputs=["nope"]),
    # Every KServe datatype is served; FP8 is none of them.
    "unknown_datatype": raw_request(b"\0" * 30, datatype="FP8"),
    "raw_byte_length": raw_request(b"\0" * 119),
    "raw_and_typed": raw_request(b"\0" * 120, [0.0] * 30),
    "unknown_model": lambda: client.infer("no-such-model", [tc.InferInput(input_name, [1, 30], "FP32")]),
    "unknown_model_metadata": lambda: client.get_model_metadata("no-such-model"),
}
errors = {k: status_of(f) for k, f in bad.items()}
for k, (code, msg) in errors.items():
    want = "StatusCode.NOT_FOUND" if k.startswith("unknown_model") else "StatusCode.INVALID_ARGUMENT"
    check(code == want, f"{k}: got {code} ({msg}), expected {want}")
seen["errors"] = {k: [c, m] for k, (c, m) in errors.items()}

# ModelConfig in Triton's terms (the Rust side checks its fields).
seen["config"] = client.get_model_config(MODEL, "1", as_json=True)["config"]
seen["config_champion"] = client.get_model_config(MODEL, as_json=True)["config"]
seen["config_unknown_version"] = status_of(lambda: client.get_model_config(MODEL, "99"))


# ModelStatistics: the counts move by exactly what is sent. Only pinned
# requests reach v1 from here on, so its deltas are known.
def stats_of(version):
    got = client.get_inference_statistics(MODEL, version, as_json=True)["model_stats"]
    check(len(got) == 1 and got[0]["name"] == MODEL and got[0]["version"] == version, f"statistics {got}")
    s = got[0]
    inf = s.get("inference_stats", {})
    # JSON leaves out zeros and spells 64-bit integers as strings.
    num = lambda d, k: int(d.get(k, 0))
    return {
        "inference_count": num(s, "inference_count"),
        "execution_count": num(s, "execution_count"),
        "last_inference": num(s, "last_inference"),
        **{f"{k}_{f}": num(inf.get(k, {}), f) for k in ("success", "fail", "queue", "compute_infer") for f in ("count", "ns")},
    }


before = stats_of("1")
sent, rows_each = 5, 4
for _ in range(sent):
    infer(rows[:rows_each], version="1")
status_of(lambda: infer(rows[:2, :29], version="1"))
after = stats_of("1")
seen["statistics_delta"] = {k: after[k] - before[k] for k in after if k != "last_inference"}
seen["statistics_delta"]["last_inference_moved"] = after["last_inference"] >= before["last_inference"] > 0
every = client.get_inference_statistics(as_json=True)["model_stats"]
seen["statistics_all"] = sorted([m["name"], m["version"]] for m in every)
seen["statistics_unknown"] = status_of(lambda: client.get_inference_statistics("no-such-model"))
seen["statistics_version_only"] = status_of(lambda: client.get_inference_statistics("", "1"))

# ModelStreamInfer: every request served as ModelInfer serves it, a bad one
# answered in its response's error_message while the stream goes on.
import queue

replies = queue.Queue()
client.start_stream(callback=lambda result, error: replies.put((result, error)), stream_timeout=60)


def stream_input(data, name=None):
    x = tc.InferInput(name or input_name, list(data.shape), "FP32")
    x.set_data_from_numpy(data)
    return [x]


sent_stream = []
for v in (1, 2):
    client.async_stream_infer(MODEL, stream_input(golden[v][0]), model_version=str(v), request_id=f"stream-{v}")
    sent_stream.append(f"stream-{v}")
client.async_stream_infer(MODEL, stream_input(rows[:, :29]), request_id="stream-bad-shape")
client.async_stream_infer("no-such-model", stream_input(rows), request_id="stream-unknown-model")
keys = sorted(routed)[:10]
for key in keys:
    client.async_stream_infer(MODEL, stream_input(rows[:1]), request_id=f"stream-{key}", parameters={"routing_key": key})
client.async_stream_infer(MODEL, stream_input(golden[2][0]), model_version="2", request_id="stream-after-errors")
client.stop_stream()
got = []
while not replies.empty():
    got.append(replies.get())
check(len(got) == 2 + 2 + len(keys) + 1, f"one reply per streamed request, got {len(got)}")
stream = {"errors": [], "routed": {}}
for result, error in got:
    if error is not None:
        stream["errors"].append(error.message())
        continue
    resp = result.get_response()
    if resp.id in ("stream-1", "stream-2", "stream-after-errors"):
        v = int(resp.model_version)
        check(np.allclose(result.as_numpy("probabilities"), golden[v][1], atol=1e-5), f"{resp.id}: probabilities")
        check((result.as_numpy("label") == golden[v][2]).all(), f"{resp.id}: labels")
        stream[resp.id] = [v, resp.parameters["role"].string_param]
    else:
        key = resp.id.removeprefix("stream-")
        stream["routed"][key] = [int(resp.model_version), resp.parameters["role"].string_param]
seen["stream"] = stream

# Triton's calls that are not served say so, and what to do instead.
unsupported = {
    "load_model": lambda: client.load_model(MODEL),
    "unload_model": lambda: client.unload_model(MODEL),
    "system_shared_memory": lambda: client.get_system_shared_memory_status(),
    "cuda_shared_memory": lambda: client.get_cuda_shared_memory_status(),
    "trace_settings": lambda: client.get_trace_settings(),
    "log_settings": lambda: client.get_log_settings(),
}
seen["unsupported"] = {k: status_of(f) for k, f in unsupported.items()}
client.close()
print(json.dumps(seen))
