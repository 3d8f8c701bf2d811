#!/usr/bin/env python3
"""Drives modelgate's KServe v2 gRPC endpoint with the real Triton client.

    kserve_client.py <host:port> <golden-v2.json>

Exits 0 and prints one JSON line of what it saw, or exits 1 with the first
check that failed.
"""
import json
import sys

import grpc
import numpy as np
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

addr, golden_path = sys.argv[1], sys.argv[2]
golden = json.load(open(golden_path))
rows = np.array(golden["inputs"]["input"]["data"], dtype=np.float32).reshape(golden["inputs"]["input"]["shape"])
want_probs = np.array(golden["outputs"]["probabilities"]["data"], dtype=np.float32).reshape(-1, 2)
want_labels = np.array(golden["outputs"]["label"]["data"], dtype=np.int64)
MODEL = "breast-cancer"
seen = {}


def check(cond, what):
    if not cond:
        print(f"check failed: {what}", file=sys.stderr)
        sys.exit(1)


client = tc.InferenceServerClient(url=addr)

# Health and metadata.
check(client.is_server_live(), "server live")
check(client.is_server_ready(), "server ready")
check(client.is_model_ready(MODEL), "model ready")
check(client.is_model_ready(MODEL, "1"), "version 1 ready")
check(not client.is_model_ready("no-such-model"), "unknown model is not ready (and not an error)")
check(not client.is_model_ready(MODEL, "99"), "unknown version is not ready")
meta = client.get_server_metadata(as_json=True)
check(meta["name"] == "modelgate", f"server name {meta}")
seen["server_extensions"] = meta.get("extensions", [])
mm = client.get_model_metadata(MODEL, as_json=True)
check(mm["versions"] == ["1", "2"], f"versions {mm['versions']}")
check(mm["platform"] == "onnxruntime_onnx", f"platform {mm}")
inp = mm["inputs"][0]
check(inp["datatype"] == "FP32" and [int(d) for d in inp["shape"]] == [-1, 30], f"input {inp}")
outs = {o["name"]: o["datatype"] for o in mm["outputs"]}
check(outs == {"label": "INT64", "probabilities": "FP32"}, f"outputs {outs}")
input_name = inp["name"]


def infer(data, version="", outputs=None, name=None, datatype="FP32", params=None):
    x = tc.InferInput(name or input_name, list(data.shape), datatype)
    x.set_data_from_numpy(data)
    req_outputs = [tc.InferRequestedOutput(o) for o in outputs] if outputs else None
    return client.infer(MODEL, [x], model_version=version, outputs=req_outputs, parameters=params)


# Raw inputs (tritonclient's only way), routed to the champion (v2).
r = infer(rows, params={"routing_key": "user-7"})
probs = r.as_numpy("probabilities")
check(np.allclose(probs, want_probs, atol=1e-5), "raw: probabilities match the golden outputs")
check((r.as_numpy("label") == want_labels).all(), "raw: labels match")
resp = r.get_response()
check(resp.model_version == "2", f"served version {resp.model_version}")
check(resp.parameters["version"].int64_param == 2, "version parameter")
check(resp.parameters["role"].string_param == "champion", "role parameter")
seen["routed"] = {"version": resp.model_version, "role": resp.parameters["role"].string_param}

# One requested output only; a pinned version.
r = infer(rows[:3], version="1", outputs=["label"])
check(r.as_numpy("probabilities") is None and r.as_numpy("label").shape == (3,), "only the requested output")
check(r.get_response().model_version == "1", "pinned version 1")

# Typed contents, through Triton's own generated stub.
stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(addr))
req = service_pb2.ModelInferRequest(model_name=MODEL, model_version="2", id="typed-1")
t = req.inputs.add(name=input_name, datatype="FP32", shape=list(rows.shape))
t.contents.fp32_contents.extend(rows.flatten().tolist())
typed = stub.ModelInfer(req)
check(typed.id == "typed-1", "the request id is echoed")
i = [o.name for o in typed.outputs].index("probabilities")
got = np.frombuffer(typed.raw_output_contents[i], dtype=np.float32).reshape(-1, 2)
check(np.allclose(got, want_probs, atol=1e-5), "typed: probabilities match")
index = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest())
seen["repository"] = sorted((m.name, m.version, m.state) for m in index.models)
check(("breast-cancer", "2", "READY") in seen["repository"], f"repository index {seen['repository']}")


def code_of(fn):
    try:
        fn()
    except InferenceServerException as e:
        return e.status(), e.message()
    except grpc.RpcError as e:
        return str(e.code()), e.details()
    return None, None


bad = {
    "wrong_shape": lambda: infer(rows[:, :29]),
    "wrong_dtype": lambda: infer(rows.astype(np.float64), datatype="FP64"),
    "wrong_name": lambda: infer(rows, name="nope"),
    "empty_batch": lambda: infer(np.zeros((0, 30), dtype=np.float32)),
    "unknown_output": lambda: infer(rows, outputs=["nope"]),
    "unknown_model": lambda: client.infer("no-such-model", [tc.InferInput(input_name, [1, 30], "FP32")]),
    "unknown_datatype": lambda: infer(rows.astype(np.float16), datatype="FP16"),
}
errors = {k: code_of(f) for k, f in bad.items()}


def raw_request(raw):
    req = service_pb2.ModelInferRequest(model_name=MODEL)
    req.inputs.add(name=input_name, datatype="FP32", shape=[1, 30])
    req.raw_input_contents.append(raw)
    return lambda: stub.ModelInfer(req)


errors["raw_byte_length"] = code_of(raw_request(b"\0" * 119))
req = service_pb2.ModelInferRequest(model_name=MODEL)
t = req.inputs.add(name=input_name, datatype="FP32", shape=[1, 30])
t.contents.fp32_contents.extend([0.0] * 30)
req.raw_input_contents.append(b"\0" * 120)
errors["raw_and_typed"] = code_of(lambda: stub.ModelInfer(req))
errors["unknown_model_metadata"] = code_of(lambda: client.get_model_metadata("no-such-model"))
for k, (code, msg) in errors.items():
    want = "StatusCode.NOT_FOUND" if k.startswith("unknown_model") else "StatusCode.INVALID_ARGUMENT"
    check(code == want, f"{k}: got {code} ({msg}), expected {want}")
seen["errors"] = {k: [c, m] for k, (c, m) in errors.items()}
print(json.dumps(seen))
