#!/usr/bin/env bash
# Runs an MPI job across two "machines" on this one: two network namespaces joined by a virtual
# Ethernet link (10.77.0.1 and 10.77.0.2). The ranks in different namespaces see different hosts,
# so Open MPI connects them over TCP, as across real machines (no shared-memory transport).
# mpirun starts the remote daemon with a stand-in for ssh (`ip netns exec`), the only part that
# differs from a real cluster, where passwordless ssh does it.
#   scripts/mpi-two-hosts.sh COMMAND...    e.g. dotnet src/NormKit.Cli/bin/Release/net10.0/NormKit.Cli.dll lab data-parallel --double --check
# Needs root and iproute2; removes what it made on exit.
set -euo pipefail
a=nk-host-a b=nk-host-b
cleanup() { ip netns del "$a" 2>/dev/null || true; ip netns del "$b" 2>/dev/null || true; rm -rf "$work"; }
work=$(mktemp -d)
trap cleanup EXIT
cleanup; work=$(mktemp -d)
ip netns add "$a"; ip netns add "$b"
ip link add nk-veth-a type veth peer name nk-veth-b
ip link set nk-veth-a netns "$a"; ip link set nk-veth-b netns "$b"
ip -n "$a" addr add 10.77.0.1/24 dev nk-veth-a; ip -n "$b" addr add 10.77.0.2/24 dev nk-veth-b
for ns in "$a" "$b"; do ip -n "$ns" link set lo up; done
ip -n "$a" link set nk-veth-a up; ip -n "$b" link set nk-veth-b up

# The ssh stand-in: "agent HOST COMMAND..." runs COMMAND in HOST's namespace.
cat > "$work/netns-rsh" <<AGENT
#!/bin/sh
host=\$1; shift
case "\$host" in 10.77.0.1) ns=$a ;; 10.77.0.2) ns=$b ;; *) echo "unknown host \$host" >&2; exit 1 ;; esac
exec ip netns exec "\$ns" /bin/sh -c "\$*"
AGENT
chmod +x "$work/netns-rsh"
printf '10.77.0.1 slots=1\n10.77.0.2 slots=1\n' > "$work/hosts"

# The two "hosts" share this machine's cores: one NormKit thread per rank unless told otherwise.
export NORMKIT_NUM_THREADS=${NORMKIT_NUM_THREADS:-1}
# Forward the variables a rank needs (a remote shell starts with few); only those that are set.
forward=()
for v in PATH HOME DOTNET_ROOT NORMKIT_NUM_THREADS NORMKIT_MPI_COLLECTIVE_TIMEOUT_S; do
    if [ -n "${!v:-}" ]; then forward+=(-x "$v"); fi
done
# --bind-to none: each "host" would bind its rank to its first core, and both hosts' first core
# is this machine's core 0.
ip netns exec "$a" mpirun --allow-run-as-root --hostfile "$work/hosts" -np 2 --bind-to none \
    --mca plm_rsh_agent "$work/netns-rsh" \
    --mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 \
    "${forward[@]}" "$@"
