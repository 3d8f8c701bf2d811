#!/usr/bin/env python3
"""Regenerate every file under models/ deterministically.

Run from anywhere (normally via `make models` from the repo root); all paths are
relative to this file's directory. Uses only scikit-learn's bundled
load_breast_cancer() dataset: nothing is downloaded.

Writes:
  repository/breast-cancer/model.toml
  repository/breast-cancer/1/model.onnx   StandardScaler + LogisticRegression
  repository/breast-cancer/2/model.onnx   GradientBoostingClassifier
  faults/{nan,slow,fail,other_signature,corrupt}.onnx
  golden/breast-cancer-{1,2}.json
  repository/cnn/1/model.onnx             a small convolutional image classifier
                                          (fixed random weights): the heavier
                                          model of the benchmarks, ~1-2 ms per
                                          48x48 image on one thread
  dtypes/{fp16,bf16,int16,uint16,uint32,uint64}.onnx   one tiny model per
                                          16-bit float / narrow or unsigned
                                          integer type, and golden/dtypes.json

Pass --time to also measure the slow fault model (not needed to regenerate).
Pass --dtypes-only to write only dtypes/ and golden/dtypes.json (no training).
"""

import os

# Single-threaded BLAS so that the fitted coefficients are bit-for-bit
# reproducible from run to run (must be set before numpy is imported).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import ctypes  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from skl2onnx import convert_sklearn  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.ensemble import GradientBoostingClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE / "repository"
FAULTS = HERE / "faults"
GOLDEN = HERE / "golden"
DTYPES = HERE / "dtypes"

OPSET = 17  # default ONNX domain
ML_OPSET = 3  # ai.onnx.ml (TreeEnsembleClassifier)
IR_VERSION = 8  # matches opset 17; loads in onnxruntime >= 1.11
N_FEATURES = 30
BATCH_DIM = "N"

# Fault rules (documented in README.md; tests depend on them).
NAN_THRESHOLD = 15.0  # nan.onnx: input[:,0] >= 15.0 -> both probabilities NaN
SLOW_HIDDEN = 256  # slow.onnx: width of the busy-work state
SLOW_ITERS_PER_ROW = 1000  # slow.onnx: Loop trip count = N * this (tuned: ~3-5 ms/row)
FAIL_INDEX = 1000  # fail.onnx: out-of-bounds Gather index used when input[:,0] < 0

GOLDEN_ROWS = list(range(0, 8)) + list(range(560, 568))

MODEL_TOML = '# per-model settings; see README "Model repository"\nintra_op_threads = 1\n'


# --------------------------------------------------------------------------
# helpers


def session(model_or_bytes, threads=1):
    so = ort.SessionOptions()
    so.log_severity_level = 4  # the expected fail.onnx error is reported via the exception
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    data = model_or_bytes if isinstance(model_or_bytes, bytes) else model_or_bytes.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def set_batch_dim(value_info):
    """Give the first dimension a stable symbolic name (dim_param = "N")."""
    dim0 = value_info.type.tensor_type.shape.dim[0]
    dim0.Clear()
    dim0.dim_param = BATCH_DIM


def normalize(model, doc):
    """Make the skl2onnx output tidy and stable: one opset entry per domain,
    a fixed IR version, named batch dimension and a doc string."""
    versions = {}
    for op in model.opset_import:
        versions[op.domain] = max(versions.get(op.domain, 0), op.version)
    del model.opset_import[:]
    for domain in sorted(versions):
        model.opset_import.append(helper.make_opsetid(domain, versions[domain]))
    model.ir_version = IR_VERSION
    model.doc_string = doc
    for vi in list(model.graph.input) + list(model.graph.output):
        set_batch_dim(vi)
    onnx.checker.check_model(model, full_check=True)
    return model


def make_io(in_name="input", in_cols=N_FEATURES):
    inp = helper.make_tensor_value_info(in_name, TensorProto.FLOAT, [BATCH_DIM, in_cols])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, [BATCH_DIM])
    probs = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [BATCH_DIM, 2])
    return inp, [label, probs]


def finish(graph, doc):
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="modelgate-make_models",
        producer_version="1",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def logistic_nodes(prefix_out="logit"):
    """Nodes computing logit[N,1] = input @ W + b (W, b initializers 'W', 'b')."""
    return [
        helper.make_node("MatMul", ["input", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], [prefix_out]),
    ]


def probs_from_logit(logit, probs_out, label_out):
    """p = Sigmoid(logit); probabilities = [1-p, p]; label = ArgMax."""
    return [
        helper.make_node("Sigmoid", [logit], ["p1"]),
        helper.make_node("Sub", ["one", "p1"], ["p0"]),
        helper.make_node("Concat", ["p0", "p1"], [probs_out], axis=1),
        helper.make_node("ArgMax", [probs_out], [label_out], axis=1, keepdims=0),
    ]


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)


def save(model, path):
    write(path, model.SerializeToString())


# --------------------------------------------------------------------------
# real models


def train():
    X, y = load_breast_cancer(return_X_y=True)
    X32 = X.astype(np.float32)

    v1 = Pipeline(
        [
            ("scaler", StandardScaler()),
            ("clf", LogisticRegression(max_iter=5000)),
        ]
    ).fit(X, y)
    v2 = GradientBoostingClassifier(n_estimators=60, max_depth=3, random_state=0).fit(X, y)
    return X32, y, v1, v2


def convert(estimator, clf, name, doc):
    model = convert_sklearn(
        estimator,
        name=name,  # default is a random uuid4 hex -> not reproducible
        initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
    )
    return normalize(model, doc)


def check_signature(model):
    s = session(model)
    ins = [(i.name, i.type, i.shape) for i in s.get_inputs()]
    outs = [(o.name, o.type, o.shape) for o in s.get_outputs()]
    assert ins == [("input", "tensor(float)", [BATCH_DIM, N_FEATURES])], ins
    assert outs == [
        ("label", "tensor(int64)", [BATCH_DIM]),
        ("probabilities", "tensor(float)", [BATCH_DIM, 2]),
    ], outs
    return s


def folded_logistic_weights(v1):
    """Fold StandardScaler into the LogisticRegression: logit = x @ W + b."""
    scaler, lr = v1.named_steps["scaler"], v1.named_steps["clf"]
    coef = lr.coef_[0] / scaler.scale_
    W = coef.astype(np.float32).reshape(N_FEATURES, 1)
    b = np.array([lr.intercept_[0] - np.dot(coef, scaler.mean_)], dtype=np.float32)
    return W, b


# --------------------------------------------------------------------------
# fault models


def make_nan(W, b):
    inp, outs = make_io()
    nodes = logistic_nodes()
    nodes += [
        helper.make_node("Sigmoid", ["logit"], ["p1"]),
        helper.make_node("Sub", ["one", "p1"], ["p0"]),
        helper.make_node("Concat", ["p0", "p1"], ["finite_probs"], axis=1),
        helper.make_node("ArgMax", ["finite_probs"], ["label"], axis=1, keepdims=0),
        # mask[N,1] = input[:,0:1] >= NAN_THRESHOLD
        helper.make_node("Gather", ["input", "col0"], ["x0"], axis=1),
        helper.make_node("GreaterOrEqual", ["x0", "threshold"], ["mask"]),
        helper.make_node("Where", ["mask", "nan", "finite_probs"], ["probabilities"]),
    ]
    inits = [
        const("W", W),
        const("b", b),
        const("one", np.float32(1.0)),
        const("col0", np.array([0], dtype=np.int64)),
        const("threshold", np.float32(NAN_THRESHOLD)),
        const("nan", np.float32(np.nan)),
    ]
    g = helper.make_graph(nodes, "nan_fault", [inp], outs, inits)
    return finish(
        g,
        f"Fault model: logistic regression, but probabilities are NaN for rows with input[:,0] >= {NAN_THRESHOLD}",
    )


def make_slow(W, b, iters_per_row=SLOW_ITERS_PER_ROW):
    rng = np.random.default_rng(0)
    H = SLOW_HIDDEN
    W_in = (rng.standard_normal((N_FEATURES, H)) * 0.01).astype(np.float32)
    # Scaled orthogonal-ish matrix keeps Tanh out of saturation (values stay finite).
    W_loop = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(np.float32)

    # Loop body: h <- Tanh(h @ W_loop); h is [1, H]. Trip count = N * iters_per_row,
    # so the work is exactly proportional to the batch size N.
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["h_in", "W_loop"], ["hw"]),
            helper.make_node("Tanh", ["hw"], ["h_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "slow_body",
        [
            helper.make_tensor_value_info("iter", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, H]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, H]),
        ],
    )

    inp, outs = make_io()
    nodes = logistic_nodes("logit_clean")
    nodes += [
        # trip count = N * iters_per_row (depends on the input => not constant-folded)
        helper.make_node("Shape", ["input"], ["in_shape"], start=0, end=1),
        helper.make_node("Mul", ["in_shape", "iters"], ["trip_1"]),
        helper.make_node("Squeeze", ["trip_1"], ["trip"]),
        # initial state depends on the input values too
        helper.make_node("ReduceMean", ["input"], ["x_mean"], axes=[0], keepdims=1),
        helper.make_node("MatMul", ["x_mean", "W_in"], ["h0_lin"]),
        helper.make_node("Tanh", ["h0_lin"], ["h0"]),
        helper.make_node("Loop", ["trip", "true", "h0"], ["h_final"], body=body),
        # logit = logit_clean + 0 * sum(h_final): keeps the loop alive
        helper.make_node("ReduceSum", ["h_final"], ["h_sum"], keepdims=0),
        helper.make_node("Mul", ["h_sum", "zero"], ["h_zero"]),
        helper.make_node("Add", ["logit_clean", "h_zero"], ["logit"]),
    ]
    nodes += probs_from_logit("logit", "probabilities", "label")
    inits = [
        const("W", W),
        const("b", b),
        const("one", np.float32(1.0)),
        const("zero", np.float32(0.0)),
        const("iters", np.array([iters_per_row], dtype=np.int64)),
        const("true", np.array(True)),
        const("W_in", W_in),
        const("W_loop", W_loop),
    ]
    g = helper.make_graph(nodes, "slow_fault", [inp], outs, inits)
    return finish(
        g,
        f"Fault model: logistic regression plus N*{iters_per_row} iterations of a "
        f"[1,{H}]x[{H},{H}] MatMul+Tanh busy loop (a few ms per row)",
    )


def make_fail(W, b):
    inp, outs = make_io()
    nodes = logistic_nodes("logit_clean")
    nodes += [
        # idx[N] = (input[:,0] < 0) * FAIL_INDEX ; Gather(small[2], idx) is out of
        # bounds at run time for any such row.
        helper.make_node("Gather", ["input", "col0"], ["x0"], axis=1),  # [N,1]
        helper.make_node("Less", ["x0", "zero"], ["neg"]),
        helper.make_node("Cast", ["neg"], ["neg_i"], to=TensorProto.INT64),
        helper.make_node("Mul", ["neg_i", "fail_index"], ["idx"]),
        helper.make_node("Gather", ["small", "idx"], ["picked"], axis=0),  # [N,1]
        helper.make_node("Mul", ["picked", "zero"], ["picked_zero"]),
        helper.make_node("Add", ["logit_clean", "picked_zero"], ["logit"]),
    ]
    nodes += probs_from_logit("logit", "probabilities", "label")
    inits = [
        const("W", W),
        const("b", b),
        const("one", np.float32(1.0)),
        const("zero", np.float32(0.0)),
        const("col0", np.array([0], dtype=np.int64)),
        const("fail_index", np.int64(FAIL_INDEX)),
        const("small", np.array([0.0, 0.0], dtype=np.float32)),
    ]
    g = helper.make_graph(nodes, "fail_fault", [inp], outs, inits)
    return finish(
        g,
        "Fault model: logistic regression, but Run() fails (Gather index out of bounds) "
        "for any batch containing a row with input[:,0] < 0",
    )


def make_other_signature():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH_DIM, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [BATCH_DIM, 1])
    nodes = [
        helper.make_node("MatMul", ["x", "A"], ["xa"]),
        helper.make_node("Add", ["xa", "c"], ["y"]),
    ]
    inits = [
        const("A", np.array([[1.0], [2.0], [3.0], [4.0]], dtype=np.float32)),
        const("c", np.array([0.5], dtype=np.float32)),
    ]
    g = helper.make_graph(nodes, "other_signature", [x], [y], inits)
    return finish(g, "Different signature: y[N,1] = x[N,4] @ [1,2,3,4]^T + 0.5")


CNN_SEED = 7
CNN_CHANNELS = 64
CNN_CLASSES = 10
CNN_SIZE = 48


def make_cnn():
    """image[N,3,48,48] -> conv3x3(3->64)+ReLU -> conv3x3(64->64)+ReLU ->
    global average pool -> dense(64->10) -> softmax probabilities[N,10],
    label[N]. ~86 M multiply-adds per image, 39 K weights: compute-heavy,
    small on disk. The weights are fixed random (He initialisation): this
    model exists to be fast or slow, not right."""
    rng = np.random.default_rng(CNN_SEED)
    c = CNN_CHANNELS

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    inits = [
        const("w1", he((c, 3, 3, 3), 3 * 9)),
        const("b1", np.zeros(c, dtype=np.float32)),
        const("w2", he((c, c, 3, 3), c * 9)),
        const("b2", np.zeros(c, dtype=np.float32)),
        const("wd", he((c, CNN_CLASSES), c)),
        const("bd", np.zeros(CNN_CLASSES, dtype=np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "wd"], ["logits0"]),
        helper.make_node("Add", ["logits0", "bd"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [BATCH_DIM, 3, CNN_SIZE, CNN_SIZE])
    outputs = [
        helper.make_tensor_value_info("label", TensorProto.INT64, [BATCH_DIM]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [BATCH_DIM, CNN_CLASSES]),
    ]
    graph = helper.make_graph(nodes, "cnn", [image], outputs, inits)
    return finish(graph, "cnn v1: two 3x3 convolutions (64 channels) on 48x48 RGB, global pool, dense, softmax")


def make_corrupt(v1_bytes):
    return v1_bytes[:200] + b"not an onnx model\n" * 16


# --------------------------------------------------------------------------
# one model per dtype: x[N,4] -> y = f(x) computed in that dtype, echo = x
#
# y never overflows whatever x is, so the golden inputs can hold each type's
# extremes: the floats halve (y = x*0.5 + 1), the integers are clipped first
# (y = Clip(x, lo, hi)*2 + 1, lo/hi chosen so that y reaches the type's
# limits). Where onnxruntime's CPU provider lacks the kernels the model is a
# cast chain through a wider type: bfloat16 has no arithmetic at all
# (Cast(Cast(x, float)*0.5 + 1, bfloat16)), int16 and uint16 have no Clip
# (Cast(Clip(Cast(x, int32), lo, hi)*2 + 1, T)).

# name -> (ONNX type, numpy type, (lo, hi) clip bounds or None, 12 golden inputs)
DTYPE_MODELS = {
    "fp16": (TensorProto.FLOAT16, np.float16, None,
             [0.0, -0.0, 0.5, 1.5, -2.25, 1000.0, 65504.0, -65504.0, 2.0 ** -24, 2.0 ** -14, 0.1, 3.14159]),
    "bf16": (TensorProto.BFLOAT16, ml_dtypes.bfloat16, None,
             [0.0, -0.0, 0.5, 1.5, -2.25, 1000.0, 3.3895313892515355e38, -1e38, 2.0 ** -133, 2.0 ** -126, 0.1, 3.14159]),
    "int16": (TensorProto.INT16, np.int16, (-16384, 16383),
              [-32768, 32767, -16384, 16383, 0, -1, 1, 12345, -12345, 20000, -20000, 7]),
    "uint16": (TensorProto.UINT16, np.uint16, (0, 32767),
               [0, 1, 2, 255, 256, 1000, 32767, 32768, 40000, 65534, 65535, 12345]),
    "uint32": (TensorProto.UINT32, np.uint32, (0, 2**31 - 1),
               [0, 1, 65535, 65536, 2**31 - 2, 2**31 - 1, 2**31, 2**32 - 1, 123456789, 7, 4000000000, 2]),
    "uint64": (TensorProto.UINT64, np.uint64, (0, 2**63 - 1),
               [0, 1, 2**32, 2**53 + 1, 2**63 - 2, 2**63 - 1, 2**63, 2**64 - 1, 1234567890123456789, 7,
                18000000000000000000, 2]),
}
DTYPE_NAMES = {  # modelgate's dtype names (DataType::as_str)
    "fp16": "FLOAT16", "bf16": "BFLOAT16", "int16": "INT16",
    "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
}


def make_dtype_model(name):
    tp, npt, clip, _ = DTYPE_MODELS[name]
    x = helper.make_tensor_value_info("x", tp, [BATCH_DIM, 4])
    outputs = [helper.make_tensor_value_info("y", tp, [BATCH_DIM, 4]),
               helper.make_tensor_value_info("echo", tp, [BATCH_DIM, 4])]
    if name == "bf16":
        inits = [const("half", np.array(0.5, dtype=np.float32)), const("one", np.array(1.0, dtype=np.float32))]
        nodes = [
            helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["xf", "half"], ["xh"]),
            helper.make_node("Add", ["xh", "one"], ["yf"]),
            helper.make_node("Cast", ["yf"], ["y"], to=TensorProto.BFLOAT16),
        ]
        doc = "dtype BFLOAT16: y = Cast(Cast(x, float)*0.5 + 1, bfloat16), echo = x"
    elif clip is None:
        inits = [const("half", np.array(0.5, dtype=npt)), const("one", np.array(1, dtype=npt))]
        nodes = [helper.make_node("Mul", ["x", "half"], ["xh"]), helper.make_node("Add", ["xh", "one"], ["y"])]
        doc = f"dtype {DTYPE_NAMES[name]}: y = x*0.5 + 1, echo = x"
    else:
        lo, hi = clip
        narrow = npt in (np.int16, np.uint16)
        wide = np.int32 if narrow else npt
        inits = [const("lo", np.array(lo, dtype=wide)), const("hi", np.array(hi, dtype=wide)),
                 const("two", np.array(2, dtype=wide)), const("one", np.array(1, dtype=wide))]
        nodes = [
            helper.make_node("Clip", ["xw" if narrow else "x", "lo", "hi"], ["xc"]),
            helper.make_node("Mul", ["xc", "two"], ["x2"]),
            helper.make_node("Add", ["x2", "one"], ["yw" if narrow else "y"]),
        ]
        if narrow:
            nodes.insert(0, helper.make_node("Cast", ["x"], ["xw"], to=TensorProto.INT32))
            nodes.append(helper.make_node("Cast", ["yw"], ["y"], to=tp))
            doc = f"dtype {DTYPE_NAMES[name]}: y = Cast(Clip(Cast(x, int32), {lo}, {hi})*2 + 1), echo = x"
        else:
            doc = f"dtype {DTYPE_NAMES[name]}: y = Clip(x, {lo}, {hi})*2 + 1, echo = x"
    nodes.append(helper.make_node("Identity", ["x"], ["echo"]))
    return finish(helper.make_graph(nodes, f"dtype_{name}", [x], outputs, inits), doc)


def run_raw(model, x, onnx_type):
    """Runs `model` on `x` given as raw element bits and returns its outputs
    as the same bits: onnxruntime's Python API has no numpy type for
    bfloat16, so its outputs are read from their buffers."""
    s = session(model)
    value = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(x, onnx_type)
    outs = s.run_with_ort_values(["y", "echo"], {"x": value})
    return [np.frombuffer(ctypes.string_at(o.data_ptr(), x.nbytes), dtype=x.dtype).reshape(o.shape()) for o in outs]


def dtype_golden(name, model):
    tp, npt, clip, values = DTYPE_MODELS[name]
    x = np.array(values, dtype=npt).reshape(3, 4)
    if name == "bf16":
        y, echo = (v.view(ml_dtypes.bfloat16) for v in run_raw(model, x.view(np.uint16), tp))
        want = (x.astype(np.float32) * np.float32(0.5) + np.float32(1)).astype(ml_dtypes.bfloat16)
    else:
        y, echo = session(model).run(["y", "echo"], {"x": x})
        if clip is None:
            want = x * npt(0.5) + npt(1)
        else:
            want = np.clip(x, clip[0], clip[1]) * npt(2) + npt(1)
    assert y.dtype == x.dtype and y.shape == x.shape, (name, y.dtype, y.shape)
    assert echo.tobytes() == x.tobytes(), f"{name}: echo is not x"
    assert y.tobytes() == want.tobytes(), f"{name}: y = {y} is not {want}"
    assert np.all(np.isfinite(y.astype(np.float64))), f"{name}: golden outputs must be finite (JSON has no NaN)"

    def tensor(a):
        # Every 16-bit float is exactly a double; integers are written as integers.
        data = [float(v) for v in a.astype(np.float64).reshape(-1)] if clip is None else [int(v) for v in a.reshape(-1)]
        return {"dtype": DTYPE_NAMES[name], "shape": list(a.shape), "data": data}

    return {"model": name, "file": f"dtypes/{name}.onnx", "doc": model.doc_string,
            "inputs": {"x": tensor(x)}, "outputs": {"y": tensor(y), "echo": tensor(echo)}}


def write_dtype_models():
    golden_docs = {}
    for name in DTYPE_MODELS:
        model = make_dtype_model(name)
        golden_docs[name] = dtype_golden(name, model)
        save(model, DTYPES / f"{name}.onnx")
    write(GOLDEN / "dtypes.json", json.dumps(golden_docs, indent=1, sort_keys=True) + "\n")


# --------------------------------------------------------------------------
# golden vectors


def golden(model, version, X32):
    rows = X32[GOLDEN_ROWS]
    label, probs = session(model).run(["label", "probabilities"], {"input": rows})
    assert label.dtype == np.int64 and probs.dtype == np.float32
    doc = {
        "model": "breast-cancer",
        "version": version,
        "inputs": {
            "input": {
                "dtype": "FLOAT32",
                "shape": list(rows.shape),
                "data": [float(v) for v in rows.reshape(-1)],
            }
        },
        "outputs": {
            "label": {"dtype": "INT64", "shape": list(label.shape), "data": [int(v) for v in label]},
            "probabilities": {
                "dtype": "FLOAT32",
                "shape": list(probs.shape),
                "data": [float(v) for v in probs.reshape(-1)],
            },
        },
    }
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


# --------------------------------------------------------------------------
# verification


def time_per_row(model, rows, repeats=5):
    s = session(model, threads=1)
    s.run(None, {"input": rows})  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        s.run(None, {"input": rows})
        best = min(best, time.perf_counter() - t0)
    return best * 1000.0 / len(rows)


def verify(X32, y, v1_model, v2_model, faults):
    s1, s2 = check_signature(v1_model), check_signature(v2_model)
    acc = {}
    for name, s in (("v1", s1), ("v2", s2)):
        label, probs = s.run(None, {"input": X32})
        assert np.all(np.isfinite(probs))
        acc[name] = float(np.mean(label == y))

    ref_label, ref_probs = s1.run(None, {"input": X32})

    # nan: finite below the threshold, NaN (both columns) at/above it.
    for name in ("nan", "slow", "fail"):
        check_signature(faults[name])
    label, probs = session(faults["nan"]).run(None, {"input": X32})
    hit = X32[:, 0] >= NAN_THRESHOLD
    assert hit.any() and (~hit).any()
    assert np.all(np.isnan(probs[hit])) and np.all(np.isfinite(probs[~hit]))
    assert np.allclose(probs[~hit], ref_probs[~hit], atol=1e-4)

    # slow: same outputs as v1 (LR weights folded), finite.
    label, probs = session(faults["slow"]).run(None, {"input": X32[:4]})
    assert np.all(np.isfinite(probs)) and np.allclose(probs, ref_probs[:4], atol=1e-4)
    label, probs = session(faults["slow"]).run(None, {"input": X32[:0]})
    assert probs.shape == (0, 2) and label.shape == (0,)

    # fail: loads, runs on real data, raises at run time on a negative first feature.
    s = session(faults["fail"])
    label, probs = s.run(None, {"input": X32})
    assert np.allclose(probs, ref_probs, atol=1e-4)
    bad = X32[:3].copy()
    bad[1, 0] = -1.0
    try:
        s.run(None, {"input": bad})
    except Exception as e:  # onnxruntime Fail / InvalidArgument
        fail_err = str(e)
    else:
        raise AssertionError("fail.onnx did not fail on a negative first feature")

    # other_signature
    s = session(faults["other_signature"])
    assert [(i.name, i.type, i.shape) for i in s.get_inputs()] == [("x", "tensor(float)", [BATCH_DIM, 4])]
    assert [(o.name, o.type, o.shape) for o in s.get_outputs()] == [("y", "tensor(float)", [BATCH_DIM, 1])]
    (out,) = s.run(None, {"x": np.ones((2, 4), dtype=np.float32)})
    assert np.allclose(out, [[10.5], [10.5]])

    # corrupt: must not load.
    try:
        session(faults["corrupt"])
    except Exception as e:
        corrupt_err = str(e)
    else:
        raise AssertionError("corrupt.onnx loaded")
    return acc, fail_err, corrupt_err


# --------------------------------------------------------------------------


def main():
    if "--dtypes-only" in sys.argv:
        write_dtype_models()
        print(f"wrote {DTYPES} and {GOLDEN / 'dtypes.json'}")
        return
    X32, y, v1, v2 = train()
    v1_model = convert(v1, v1.named_steps["clf"], "breast_cancer_v1", "breast-cancer v1: StandardScaler + LogisticRegression")
    v2_model = convert(v2, v2, "breast_cancer_v2", "breast-cancer v2: GradientBoostingClassifier(n_estimators=60, max_depth=3)")
    v1_bytes = v1_model.SerializeToString()

    W, b = folded_logistic_weights(v1)
    faults = {
        "nan": make_nan(W, b),
        "slow": make_slow(W, b),
        "fail": make_fail(W, b),
        "other_signature": make_other_signature(),
        "corrupt": make_corrupt(v1_bytes),
    }

    acc, fail_err, corrupt_err = verify(X32, y, v1_model, v2_model, faults)

    write(REPO / "breast-cancer" / "model.toml", MODEL_TOML)
    write(REPO / "breast-cancer" / "1" / "model.onnx", v1_bytes)
    save(v2_model, REPO / "breast-cancer" / "2" / "model.onnx")
    for name, m in faults.items():
        path = FAULTS / f"{name}.onnx"
        write(path, m) if isinstance(m, bytes) else save(m, path)
    write(GOLDEN / "breast-cancer-1.json", golden(v1_model, 1, X32))
    write(GOLDEN / "breast-cancer-2.json", golden(v2_model, 2, X32))

    cnn = make_cnn()
    images = np.random.default_rng(CNN_SEED + 1).standard_normal((4, 3, CNN_SIZE, CNN_SIZE)).astype(np.float32)
    label, probs = session(cnn).run(["label", "probabilities"], {"image": images})
    assert probs.shape == (4, CNN_CLASSES) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    write(REPO / "cnn" / "model.toml", MODEL_TOML)
    save(cnn, REPO / "cnn" / "1" / "model.onnx")
    write_dtype_models()

    print(f"accuracy on the full dataset: v1={acc['v1']:.4f} v2={acc['v2']:.4f}")
    print(f"fail.onnx run-time error: {fail_err.splitlines()[0][:200]}")
    print(f"corrupt.onnx load error: {corrupt_err.splitlines()[0][:200]}")

    if "--time" in sys.argv:
        for n in (1, 8, 32):
            ms = time_per_row(faults["slow"], X32[:n])
            print(f"slow.onnx: N={n:3d} {ms:.2f} ms/row (intra_op=1, inter_op=1)")
        s = session(cnn)
        for n in (1, 32):
            x = np.random.default_rng(0).standard_normal((n, 3, CNN_SIZE, CNN_SIZE)).astype(np.float32)
            s.run(None, {"image": x})
            t0 = time.perf_counter()
            for _ in range(20):
                s.run(None, {"image": x})
            print(f"cnn: N={n:3d} {(time.perf_counter() - t0) / 20 / n * 1000:.3f} ms/image (intra_op=1)")
    print(f"wrote {HERE}")


if __name__ == "__main__":
    main()
