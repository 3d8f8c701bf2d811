#!/usr/bin/env bash
# What the test suite needs beyond the Rust toolchain, from Debian's
# packages: promtool (package prometheus) checks the metrics exposition and
# the chart's alert rules; prometheus itself (same package) and alertmanager
# (package prometheus-alertmanager, installed as prometheus-alertmanager)
# run the monitoring pipeline test, each on loopback ports with a temporary
# folder; etcd (package etcd-server) backs the fleet tests,
# each starting its own on loopback ports with a temporary data directory. Installs only what is missing; needs root (or
# sudo) the first time. The Python clients' venvs are made by the tests
# themselves, from PyPI.
set -euo pipefail
missing=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
command -v alertmanager >/dev/null || command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
command -v etcd >/dev/null || missing+=(etcd-server)
# tests/tests/image.rs replays the image's final stage in its own mount and
# network namespace (unshare, nsenter, setpriv; `ip` brings its loopback up).
command -v ip >/dev/null || missing+=(iproute2)
{ command -v unshare && command -v nsenter && command -v setpriv; } >/dev/null || missing+=(util-linux)
# Azurite (the Azure Storage emulator, tests/src/azurite.rs) runs on Node;
# make test-servers installs it with npm.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "test deps: installing ${missing[*]} (Debian packages)" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "test deps: run as root, or install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# --no-install-recommends: promtool comes with the server package; nothing
# is started (policy-rc.d keeps the packages' services down in containers;
# the tests stop nothing they did not start).
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
command -v promtool >/dev/null || { echo "test deps: promtool still missing after install" >&2; exit 1; }
command -v alertmanager >/dev/null || command -v prometheus-alertmanager >/dev/null ||
  { echo "test deps: alertmanager still missing after install" >&2; exit 1; }
command -v etcd >/dev/null || { echo "test deps: etcd still missing after install" >&2; exit 1; }
