# The image the Helm chart runs. Not built by CI here (no container daemon on
# this machine); kept small and boring: build with the pinned toolchain, take
# ONNX Runtime's shared library from the pinned PyPI wheel, run as non-root.
#
#   docker build -t modelgate:0.1.0 .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/fetch-onnxruntime.sh && cargo build --release -p modelgate

FROM debian:bookworm-slim
COPY --from=build /src/target/release/modelgate /usr/local/bin/modelgate
COPY --from=build /src/.cache/onnxruntime/ /usr/local/lib/onnxruntime/
ENV ORT_DYLIB_PATH=/usr/local/lib/onnxruntime/libonnxruntime.so.1.32.0
USER 65532:65532
EXPOSE 50051 50052 9464
ENTRYPOINT ["modelgate"]
CMD ["serve", "--models", "/models", "--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9464"]
