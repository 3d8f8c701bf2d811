# The image the Helm chart runs. Not built by CI here (no container engine on
# this machine): tests/tests/image.rs lints this file and replays its final
# stage against the built binary instead. Kept small and boring: build with
# the pinned toolchain, take ONNX Runtime's shared library from the pinned
# PyPI wheel, run as non-root, serve the bundled models by default.
#
#   docker build -t modelgate:0.1.0 .
#   docker run --rm -p 50051:50051 -p 9464:9464 modelgate:0.1.0
FROM rust:1.95-bookworm AS build
# protoc and the well-known protos for the etcd client's generated code (as
# scripts/install-build-deps.sh; the base image has make, pkg-config and
# libssl-dev for the Kafka sink's librdkafka), pip to fetch the ONNX Runtime wheel.
# Versions come with the pinned Debian release (bookworm), not per package.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev python3-pip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/fetch-onnxruntime.sh && cargo build --release -p modelgate

FROM debian:bookworm-slim
# libssl3: OpenSSL, which the Kafka record sink's librdkafka links for TLS.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/modelgate /usr/local/bin/modelgate
COPY --from=build /src/.cache/onnxruntime/ /usr/local/lib/onnxruntime/
# The slim base has no CA roots; the build image has Debian's
# ca-certificates. `modelgate` connecting to https:// without --tls-ca
# checks the peer against these.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# The bundled models: the image serves them as it is; the chart mounts its
# model repository over /models.
COPY models/repository/ /models/
# Rollout state, audit log and shadow records: the one place the gateway's
# user writes (the chart mounts a volume here).
RUN mkdir -p /var/lib/modelgate && chown 65532:65532 /var/lib/modelgate
ENV ORT_DYLIB_PATH=/usr/local/lib/onnxruntime/libonnxruntime.so.1.32.0
USER 65532:65532
WORKDIR /var/lib/modelgate
EXPOSE 50051 50052 9464
ENTRYPOINT ["modelgate"]
CMD ["serve", "--models", "/models", "--state-dir", "/var/lib/modelgate", "--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9464"]
