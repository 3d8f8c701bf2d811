#!/usr/bin/env python3
"""Writes the benchmarks' batching model: a wide MLP whose weights (16 MiB)
are streamed from memory on every call, so one call with 32 rows costs far
less than 32 calls with one row — the case dynamic batching exists for.

    make_mlp.py <out.onnx>

input[N,30] -> dense 2048 + ReLU -> dense 2048 + ReLU -> dense 2 -> softmax
probabilities[N,2], label[N]. Fixed random weights (seed 11): deterministic,
not trained. Generated at bench time (not committed: 16 MiB).
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(11)
H = 2048


def dense(n_in, n_out):
    return (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32)


inits = [
    numpy_helper.from_array(dense(30, H), "w1"),
    numpy_helper.from_array(np.zeros(H, np.float32), "b1"),
    numpy_helper.from_array(dense(H, H), "w2"),
    numpy_helper.from_array(np.zeros(H, np.float32), "b2"),
    numpy_helper.from_array(dense(H, 2), "w3"),
    numpy_helper.from_array(np.zeros(2, np.float32), "b3"),
]
nodes = [
    helper.make_node("Gemm", ["input", "w1", "b1"], ["h1"]),
    helper.make_node("Relu", ["h1"], ["r1"]),
    helper.make_node("Gemm", ["r1", "w2", "b2"], ["h2"]),
    helper.make_node("Relu", ["h2"], ["r2"]),
    helper.make_node("Gemm", ["r2", "w3", "b3"], ["logits"]),
    helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
]
graph = helper.make_graph(
    nodes,
    "mlp",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 30])],
    [
        helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
    ],
    inits,
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="modelgate-bench")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
