#!/usr/bin/env bash
# What building needs beyond the Rust toolchain, from Debian's packages:
# protoc and the well-known protos (protobuf-compiler, libprotobuf-dev) for
# the etcd client's generated code (fleet mode). modelgate's own protos
# compile with a pure-Rust compiler. make, pkg-config and libssl-dev for
# the Kafka record sink's librdkafka, which rdkafka-sys builds from C (TLS
# through the system's OpenSSL). Installs only what is missing; needs
# root (or sudo) the first time.
set -euo pipefail
missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
command -v make >/dev/null || missing+=(make)
command -v pkg-config >/dev/null || missing+=(pkg-config)
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "build deps: installing ${missing[*]} (Debian packages)" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "build deps: run as root, or install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
command -v protoc >/dev/null || { echo "build deps: protoc still missing after install" >&2; exit 1; }
