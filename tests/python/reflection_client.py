#!/usr/bin/env python3
"""Asks a gRPC server what it serves over reflection v1alpha, with Python's
grpcio-reflection client (the one gRPC's Python tooling is built on).

    reflection_client.py <host:port>

Prints one JSON line: the services listed and, for each, the methods found
by resolving its file descriptor (and every file it imports) over reflection.
"""
import json
import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

channel = grpc.insecure_channel(sys.argv[1])
db = ProtoReflectionDescriptorDatabase(channel)
services = sorted(db.get_services())
pool = DescriptorPool(db)
methods = {s: sorted(m.name for m in pool.FindServiceByName(s).methods) for s in services}
print(json.dumps({"services": services, "methods": methods}))
