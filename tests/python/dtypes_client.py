#!/usr/bin/env python3
"""Sends every 16-bit float and narrow/unsigned integer type through
modelgate's KServe v2 endpoint with NVIDIA's real Triton client.

    dtypes_client.py <host:port> <models/golden/dtypes.json>

The gateway serves the models of models/dtypes/ under their golden names
(fp16, bf16, int16, uint16, uint32, uint64; tests/tests/dtypes.rs starts it).
tritonclient sends numpy arrays as raw little-endian bytes: np.float16 for
FP16, ml_dtypes.bfloat16 for BF16 (numpy has none; tritonclient maps it).
Exits 0 and prints one JSON line of what it saw, or exits 1 naming the first
check that failed.
"""
import json
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

addr, golden_path = sys.argv[1], Path(sys.argv[2])
golden = json.loads(golden_path.read_text())
NUMPY = {
    "FLOAT16": ("FP16", np.float16),
    "BFLOAT16": ("BF16", ml_dtypes.bfloat16),
    "INT16": ("INT16", np.int16),
    "UINT16": ("UINT16", np.uint16),
    "UINT32": ("UINT32", np.uint32),
    "UINT64": ("UINT64", np.uint64),
}


def check(cond, what):
    if not cond:
        print(f"check failed: {what}", file=sys.stderr)
        sys.exit(1)


def array(t):
    datatype, npt = NUMPY[t["dtype"]]
    # Integers straight from Python ints: a detour through float64 would
    # round the large UINT64 values.
    return datatype, np.array(t["data"], dtype=npt).reshape(t["shape"])


client = tc.InferenceServerClient(url=addr)
seen = {}
for model, doc in sorted(golden.items()):
    datatype, x = array(doc["inputs"]["x"])
    meta = client.get_model_metadata(model, as_json=True)
    got = {t["name"]: t["datatype"] for t in meta["inputs"] + meta["outputs"]}
    check(got == {"x": datatype, "y": datatype, "echo": datatype}, f"{model}: metadata {got}")

    inp = tc.InferInput("x", list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    r = client.infer(model, [inp], client_timeout=30)
    outputs = {}
    for name in ("y", "echo"):
        _, want = array(doc["outputs"][name])
        out = r.as_numpy(name)
        check(out is not None and out.dtype == want.dtype, f"{model}: output {name} dtype {None if out is None else out.dtype}")
        check(out.shape == want.shape, f"{model}: output {name} shape {out.shape}")
        # Bit for bit: -0.0 and subnormals too.
        check(out.tobytes() == want.tobytes(), f"{model}: output {name} {out.tolist()} != {want.tolist()}")
        outputs[name] = r.get_output(name).datatype
    seen[model] = outputs

# A numpy type that is not the model's is refused, naming both.
inp = tc.InferInput("x", [1, 4], "FP16")
inp.set_data_from_numpy(np.zeros((1, 4), dtype=np.float16))
try:
    client.infer("bf16", [inp], client_timeout=30)
except InferenceServerException as e:
    seen["wrong_datatype"] = [e.status(), e.message()]
else:
    check(False, "FP16 sent to the BF16 model was accepted")

print(json.dumps(seen, sort_keys=True))
