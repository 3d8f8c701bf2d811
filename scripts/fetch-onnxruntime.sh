#!/usr/bin/env bash
# Puts ONNX Runtime's shared library into .cache/onnxruntime/, taken from the
# pinned `onnxruntime` wheel on PyPI (the only place this project may fetch it
# from). The wheel is checked against a pinned sha256 by pip --require-hashes;
# the extracted library is reused when present.
#
#   scripts/fetch-onnxruntime.sh            # fetch if missing, print the path
#   MODELGATE_CACHE_DIR=/x scripts/...      # use another cache folder
set -euo pipefail

ORT_VERSION=1.32.0
# manylinux_2_28 x86_64 wheel for CPython 3.11; the .so inside does not depend
# on the Python version, the tag only fixes which file (and checksum) we get.
WHEEL_SHA256=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${MODELGATE_CACHE_DIR:-$root/.cache}/onnxruntime
lib=$cache/libonnxruntime.so.$ORT_VERSION

if [ -s "$lib" ]; then
  echo "$lib"
  exit 0
fi
if [ "$(uname -sm)" != "Linux x86_64" ]; then
  echo "fetch-onnxruntime: only Linux x86_64 is pinned here; set ORT_DYLIB_PATH to your libonnxruntime" >&2
  exit 1
fi

mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
printf 'onnxruntime==%s --hash=sha256:%s\n' "$ORT_VERSION" "$WHEEL_SHA256" >"$tmp/req.txt"
python3 -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
  --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11 \
  --implementation cp --abi cp311 -r "$tmp/req.txt" -d "$tmp" >&2
python3 - "$tmp" "$lib" "$ORT_VERSION" <<'PY'
import glob, os, sys, zipfile
tmp, dest, ver = sys.argv[1:]
(wheel,) = glob.glob(os.path.join(tmp, "onnxruntime-*.whl"))
member = f"onnxruntime/capi/libonnxruntime.so.{ver}"
with zipfile.ZipFile(wheel) as z:
    data = z.read(member)
part = dest + ".part"
with open(part, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
os.rename(part, dest)
PY
echo "$lib"
