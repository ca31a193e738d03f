# Shared by scripts/run, scripts/test and scripts/bench: install missing Debian packages.
# shellcheck shell=bash

# Packages needed to build and run the gateway.
GATEWAY_PACKAGES=(
  pkg-config libopus-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  gstreamer1.0-libav gstreamer1.0-tools
)

# Real peers the tests start: ffmpeg (RTMP publisher), sipp and baresip (phones), nginx-rtmp (destination),
# Chromium (WebRTC client), procps (ps for benchmarks).
TEST_PACKAGES=(ffmpeg sip-tester baresip nginx libnginx-mod-rtmp chromium chromium-driver procps openssl)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_packages PKG...: installs the ones that are not installed yet (apt-get update at most once).
ensure_packages() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  if ! command -v apt-get >/dev/null; then
    echo "error: missing packages ${missing[*]} and no apt-get to install them" >&2
    return 1
  fi
  echo "installing: ${missing[*]}" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

ensure_rust() {
  if ! command -v cargo >/dev/null; then
    echo "error: cargo not found; install a Rust toolchain (1.85 or newer), e.g. from https://rustup.rs" >&2
    return 1
  fi
}
