#!/usr/bin/env bash
# What a fresh Debian machine needs beyond the .NET 10 SDK:
#   fonts-dejavu-core       the font the lab's charts are drawn with
#   openmpi-bin, mpich      the MPI launchers and libraries of NormKit.Mpi and its multi-process tests
#   dataset-fashion-mnist   optional: the full Fashion-MNIST set (the repository ships 1000 test images)
#   python3-torch           optional: the PyTorch peer of the benchmark and the fixture script
set -euo pipefail
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core openmpi-bin mpich
if [[ " $* " == *" --all "* ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist python3-torch
fi
