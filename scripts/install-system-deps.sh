#!/usr/bin/env bash
# Debian packages the default data and tests need. Installs only what is missing; uses sudo when
# not root. Skip with TICLIP_SKIP_APT=1 (then the emoji source needs --font PATH).
set -euo pipefail
PKGS=(fonts-noto-color-emoji libraqm0 wordnet-base dataset-fashion-mnist chromium tuxpaint-stamps-default openclipart-png)
[ "${TICLIP_SKIP_APT:-0}" = "1" ] && exit 0
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "warning: apt-get not found; install ${missing[*]} (or equivalents) by hand" >&2
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
  || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
