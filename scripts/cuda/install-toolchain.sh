#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compilers from PyPI wheels into a local directory (never into
# the repository) and prints the toolkit root (use it as POLYADAPT_CUDA_HOME) as its last line.
#
# Why 13.0: the lent GPUs' driver is CUDA 13.0 and refuses PTX from a newer compiler, so the
# PTX we embed (and the NVRTC we compile with at run time) must be 13.0.
# The 13.0 wheels hold nvcc, ptxas, cicc (nvvm), the headers and NVRTC, but no disassembler:
# cuobjdump and nvdisasm exist on PyPI only from 13.2, so those two come from 13.2.51. They only
# read machine code (the HMMA check); they never produce what we embed.
#
# Usage: scripts/cuda/install-toolchain.sh [PREFIX]
#   PREFIX defaults to $POLYADAPT_CUDA_PREFIX, else ~/.cache/polyadapt-cuda/cu13.0.
# Needs python3 with pip (for `pip download`), unzip or python3's zipfile, and network access
# to PyPI on the first run; later runs find the stamp and return at once.
set -euo pipefail

prefix="${1:-${POLYADAPT_CUDA_PREFIX:-$HOME/.cache/polyadapt-cuda/cu13.0}}"
root="$prefix/nvidia/cu13"

# name==version sha256 (hashes of the manylinux x86_64 wheels, checked after download)
wheels=(
  "nvidia-cuda-nvcc==13.0.88 56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03"
  "nvidia-cuda-nvrtc==13.0.88 ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575"
  "nvidia-cuda-runtime==13.0.96 7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548"
  "nvidia-cuda-crt==13.0.88 2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4"
  "nvidia-cuda-cccl==13.0.85 e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649"
  "nvidia-nvvm==13.0.88 c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0"
  "nvidia-cuda-cuobjdump==13.2.51 95c69d3ddf0c2c1f535ec44c3433a66aeee19f588d9d22f73356e20b25f12b50"
  "nvidia-cuda-nvdisasm==13.2.51 5a7acf77c55d6d2911ed6155d4d5bc156ffadf9df7a68a89b0c1155f4b13688c"
)

stamp="$prefix/.installed"
want="$(printf '%s\n' "${wheels[@]}")"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$root/bin/nvcc" ]]; then
  echo "$root"
  exit 0
fi

python="${POLYADAPT_PYTHON:-python3}"
dl="$prefix.wheels"
mkdir -p "$dl"
specs=()
for w in "${wheels[@]}"; do specs+=("${w%% *}"); done
# py3-none wheels: any interpreter version matches; pip wants one named with --platform.
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
  -d "$dl" "${specs[@]}" >&2

# Unpack each wheel (a zip) into one tree: they all live under nvidia/cu13/, which then has
# the layout nvcc.profile expects (bin/, include/, lib/, nvvm/). `pip install --target`
# would replace nvidia/ wheel by wheel, hence the plain unzip.
rm -rf "$prefix.tmp"
mkdir -p "$prefix.tmp"
for w in "${wheels[@]}"; do
  spec="${w%% *}" sum="${w##* }"
  name="${spec%%==*}" ver="${spec##*==}"
  file=$(ls "$dl"/"${name//-/_}"-"$ver"-*.whl | head -1)
  echo "$sum  $file" | sha256sum -c --quiet - >&2 || { echo "checksum mismatch: $file" >&2; exit 1; }
  "$python" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$file" "$prefix.tmp"
done
chmod +x "$prefix.tmp"/nvidia/cu13/bin/* "$prefix.tmp"/nvidia/cu13/nvvm/bin/*
rm -rf "$prefix"
mv "$prefix.tmp" "$prefix"
echo "$want" > "$stamp"
"$root/bin/nvcc" --version | tail -1 >&2
echo "$root"
