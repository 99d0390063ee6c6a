#!/usr/bin/env bash
# Installs the PyTorch peer of the benchmark (Debian's python3-torch, CPU). ONNX Runtime
# comes from NuGet with the build.
set -euo pipefail
if /usr/bin/python3 -c "import torch" 2>/dev/null; then echo "python3-torch present"; exit 0; fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch
