#!/usr/bin/env bash
# The servers the tests run as real processes, built from crates.io with
# `cargo install --locked` at pinned versions into .cache/tools/bin: tansu (a
# Kafka-protocol broker; only its in-memory storage engine, which is what
# the tests use and builds far faster than the default features) and s3s-fs
# (an S3 server over a folder; 0.14.1, as newer releases need a newer rustc
# than the pinned toolchain). Each is built only when its binary is missing
# or its stamp (crate, version, features) differs; quiet otherwise. Cold, on
# 2 busy cores, expect minutes for each (the time taken is printed).
# Azurite (Microsoft's Azure Storage emulator) comes from npm with `npm ci`
# against the committed tests/azurite/package-lock.json into
# .cache/tools/azurite, again only when missing or the lock file changed
# (about 30 s). The GCS emulator is a PyPI package: the tests make its venv.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.cache/tools"
mkdir -p "$tools/bin"
# Several checkouts share .cache: one build at a time, the others then find it done.
exec 9>"$tools/.install.lock"
flock 9
# One throwaway target dir for both builds (they share most dependencies),
# removed at exit: the intermediates are large and not reused later.
target=""
trap 'if [ -n "$target" ]; then rm -rf "$target"; fi' EXIT

install() {
  local name=$1 crate=$2 version=$3
  shift 3
  local spec="$crate@$version $*"
  local stamp="$tools/bin/$name.version"
  if [ -x "$tools/bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$spec" ]; then
    return 0
  fi
  echo "test servers: building $name ($spec) from crates.io; this takes minutes" >&2
  local start=$SECONDS
  [ -n "$target" ] || target="$(mktemp -d)"
  CARGO_TARGET_DIR="$target" CARGO_INCREMENTAL=0 cargo install --quiet --locked --force \
    --root "$tools" "$crate@$version" "$@"
  echo "$spec" >"$stamp"
  echo "test servers: $name built in $((SECONDS - start)) s" >&2
}

install tansu tansu 0.6.0 --no-default-features --features dynostore
install s3s-fs s3s-fs 0.14.1 --features binary

# Azurite: exact versions of the whole tree from the committed lock file;
# install scripts are not run (Azurite needs none).
azurite="$tools/azurite"
lock="$root/tests/azurite/package-lock.json"
stamp="$(sha256sum "$lock" | cut -d' ' -f1)"
if [ ! -x "$azurite/node_modules/.bin/azurite-blob" ] || [ "$(cat "$azurite/.stamp" 2>/dev/null)" != "$stamp" ]; then
  command -v npm >/dev/null || { echo "test servers: npm not found (make test-deps installs it)" >&2; exit 1; }
  echo "test servers: installing Azurite from npm (tests/azurite/package-lock.json)" >&2
  start=$SECONDS
  rm -rf "$azurite"
  mkdir -p "$azurite"
  cp "$root/tests/azurite/package.json" "$lock" "$azurite/"
  (cd "$azurite" && npm ci --silent --no-audit --no-fund --ignore-scripts)
  echo "$stamp" >"$azurite/.stamp"
  echo "test servers: Azurite installed in $((SECONDS - start)) s" >&2
fi
