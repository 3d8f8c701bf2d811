#!/usr/bin/env python3
"""What users hand-roll today: a Python grpcio server with onnxruntime,
speaking modelgate.v1 Predict (and ModelMetadata, which the load generator
asks first). The benchmark's baseline, not a product.

    baseline_server.py <stubs dir> <model.onnx> <model name>

Serves on 127.0.0.1, a free port, printed as "listening on 127.0.0.1:PORT".
Same ONNX Runtime settings as the gateway: one intra-op and one inter-op
thread per session, full graph optimisation; one session, shared by the
gRPC worker threads (onnxruntime's run is thread-safe and drops the GIL).
"""
import sys
from concurrent import futures

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from modelgate.v1 import predict_pb2 as pb  # noqa: E402
from modelgate.v1 import predict_pb2_grpc as pbg  # noqa: E402

MODEL_PATH, MODEL_NAME = sys.argv[2], sys.argv[3]
DTYPES = {
    "tensor(float)": (pb.DATA_TYPE_FLOAT32, np.float32),
    "tensor(double)": (pb.DATA_TYPE_FLOAT64, np.float64),
    "tensor(int64)": (pb.DATA_TYPE_INT64, np.int64),
    "tensor(int32)": (pb.DATA_TYPE_INT32, np.int32),
}
BY_ENUM = {v[0]: v[1] for v in DTYPES.values()}

so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
session = ort.InferenceSession(MODEL_PATH, so, providers=["CPUExecutionProvider"])


def meta(arg):
    return pb.TensorMetadata(
        name=arg.name,
        dtype=DTYPES[arg.type][0],
        shape=[d if isinstance(d, int) else -1 for d in arg.shape],
    )


class Predict(pbg.PredictServicer):
    def Predict(self, request, context):
        if request.model != MODEL_NAME:
            context.abort(grpc.StatusCode.NOT_FOUND, f"model '{request.model}' not found")
        feeds = {}
        for t in request.inputs:
            dtype = BY_ENUM[t.dtype]
            data = np.frombuffer(t.raw, dtype=dtype) if t.raw else np.asarray(t.float_data, dtype=dtype)
            feeds[t.name or session.get_inputs()[0].name] = data.reshape(t.shape)
        outputs = session.run(None, feeds)
        resp = pb.PredictResponse(model=MODEL_NAME, version=1, request_id=request.request_id)
        for spec, value in zip(session.get_outputs(), outputs):
            resp.outputs.add(name=spec.name, dtype=DTYPES[spec.type][0], shape=list(value.shape), raw=value.tobytes())
        return resp

    def ModelMetadata(self, request, context):
        return pb.ModelMetadataResponse(
            model=MODEL_NAME,
            champion=1,
            versions=[
                pb.VersionMetadata(
                    version=1,
                    state=pb.VERSION_STATE_READY,
                    inputs=[meta(a) for a in session.get_inputs()],
                    outputs=[meta(a) for a in session.get_outputs()],
                )
            ],
        )


server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
pbg.add_PredictServicer_to_server(Predict(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(f"listening on 127.0.0.1:{port}", flush=True)
server.wait_for_termination()
