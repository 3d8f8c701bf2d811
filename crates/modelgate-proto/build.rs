//! Compiles the protos under `proto/` with protox (pure Rust), so no system
//! `protoc` is needed on any machine that builds modelgate.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = ["modelgate/v1/predict.proto", "modelgate/v1/admin.proto"];
    for f in files.iter().chain(&["inference/grpc_service.proto", "inference/model_config.proto"]) {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Kept for gRPC server reflection.
    std::fs::write(out.join("modelgate_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure()
        .bytes(".modelgate.v1.Tensor.raw")
        // Messages print as JSON in the CLI's --json mode.
        .type_attribute(".modelgate.v1", "#[derive(serde::Serialize)]")
        // Requests are scanned for absurd repetition before decoding.
        .codec_path("crate::bounded::BoundedCodec")
        .compile_fds(fds)?;

    // KServe v2 (Open Inference Protocol) and Triton's extensions, package
    // `inference` (model_config.proto comes in as grpc_service.proto's import).
    let fds = protox::compile(["inference/grpc_service.proto"], [&root])?;
    std::fs::write(out.join("inference_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure()
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .codec_path("crate::bounded::BoundedCodec")
        .compile_fds(fds)?;
    Ok(())
}
