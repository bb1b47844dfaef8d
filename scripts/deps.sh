#!/usr/bin/env bash
# Checks the Debian packages the toolkit needs; installs the missing ones when run as
# root, otherwise prints the exact apt-get command and fails.
#   scripts/deps.sh          build dependencies (compiler side)
#   scripts/deps.sh --torch  also PyTorch + numpy, used by the cross-check tests and the
#                            PyTorch reference benchmarks
#   scripts/deps.sh --browser  also Debian's chromium, used headless by the report test
#                            (options combine: --torch --browser)
set -u
pkgs=(g++ make libopenblas-dev doctest-dev nlohmann-json3-dev libcli11-dev gnuplot-nox)
for opt in "$@"; do
  case "$opt" in
    --torch) pkgs+=(python3-torch python3-numpy) ;;
    --browser) pkgs+=(chromium) ;;
    *) echo "deps.sh: unknown option $opt (--torch, --browser)" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ]; then
  echo "deps.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >&2 || {
    echo "deps.sh: apt-get failed for: ${missing[*]}" >&2; exit 1; }
else
  echo "deps.sh: missing Debian packages. Run:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
