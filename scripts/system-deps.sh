#!/usr/bin/env bash
# Debian packages the tests need: Chromium and its driver for the browser tests (never a
# downloaded browser), STILTS to check that exported catalogs open cleanly in TOPCAT's engine.
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium chromium-driver)
command -v stilts >/dev/null || missing+=(stilts)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
