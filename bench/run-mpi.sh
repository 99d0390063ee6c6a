#!/usr/bin/env bash
# SyncBatchNorm over MPI: collective latency beside MPI_Allreduce and PyTorch's gloo, SyncBatchNorm
# against BatchNorm on the same shard, and the lab's data-parallel CNN per step against one process.
# Writes bench/results/mpi-<date>-np<K>-<mpi>.md for 2 and 4 ranks (Open MPI; 4 oversubscribes a
# 2-core machine), 2 ranks over MPICH when it is installed, and 2 ranks on two hosts made of
# network namespaces (Open MPI over TCP) when run as root. About 3 minutes.
#   bench/run-mpi.sh              full run
#   bench/run-mpi.sh --smoke      seconds, timings meaningless (what CI runs)
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build bench/NormKit.Benchmarks -c Release -v quiet -nologo
bench=bench/NormKit.Benchmarks/bin/Release/net10.0/NormKit.Benchmarks.dll
# Each rank is bound to one core, where tiered compilation takes many calls to reach optimized
# code (the background compiler competes with the rank for its core); measure optimized code.
export DOTNET_TieredCompilation=0
mpirun --allow-run-as-root -x DOTNET_TieredCompilation -np 2 dotnet "$bench" --mpi "$@"
mpirun --allow-run-as-root --oversubscribe -x DOTNET_TieredCompilation -np 4 dotnet "$bench" --mpi "$@"
if command -v mpiexec.mpich >/dev/null; then
    mpiexec.mpich -n 2 dotnet "$bench" --mpi "$@"
fi
# Two hosts made of network namespaces, over TCP (as root; scripts/mpi-two-hosts.sh).
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
    bash scripts/mpi-two-hosts.sh -x DOTNET_TieredCompilation dotnet "$bench" --mpi --tag two-hosts-tcp "$@"
fi
