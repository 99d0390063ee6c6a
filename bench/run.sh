#!/usr/bin/env bash
# The benchmark: roofline, NormKit, ONNX Runtime and PyTorch side by side in one run.
# Writes bench/results/<date>.md. Takes about 10 minutes on 2 cores.
#   bench/run.sh            full run (installs python3-torch first if it can; else the PyTorch column says absent)
#   bench/run.sh --smoke    seconds: tiny shapes, one iteration (what CI runs)
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ " $* " != *" --smoke "* && " $* " != *" --no-torch "* ]]; then
    bash bench/install-peers.sh || echo "PyTorch peer could not be installed; continuing without it."
fi
dotnet build bench/NormKit.Benchmarks -c Release -v quiet -nologo || exit 1
exec dotnet run --project bench/NormKit.Benchmarks -c Release --no-build -- "$@"
