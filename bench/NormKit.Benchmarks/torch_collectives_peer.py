"""PyTorch's CPU collectives (torch.distributed over gloo) as the peer of NormKit's MPI
transport: median microseconds per all_gather and all_reduce of float64 vectors, with the
same sizes, process count and timing scheme as MpiLatency.cs.

usage: torch_collectives_peer.py WORLD_SIZE SIZE[,SIZE...] REPS INNER
prints one JSON object: {"SIZE": {"all_gather": us, "all_reduce": us}, ...}
"""
import json, os, statistics, sys, time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, world, sizes, reps, inner, port, queue):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    out = {}
    for n in sizes:
        x = torch.full((n,), float(rank), dtype=torch.float64)
        parts = [torch.empty(n, dtype=torch.float64) for _ in range(world)]
        result = {}
        for name, op in (("all_gather", lambda: dist.all_gather(parts, x)),
                         ("all_reduce", lambda: dist.all_reduce(x.clone()))):
            for _ in range(inner):
                op()
            samples = []
            for _ in range(reps):
                dist.barrier()
                t = time.perf_counter()
                for _ in range(inner):
                    op()
                samples.append((time.perf_counter() - t) / inner * 1e6)
            # the collective is as slow as its slowest rank: keep the largest median
            med = torch.tensor([statistics.median(samples)], dtype=torch.float64)
            dist.all_reduce(med, op=dist.ReduceOp.MAX)
            result[name] = med.item()
        out[str(n)] = result
    if rank == 0:
        queue.put(out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    world, sizes, reps, inner = int(sys.argv[1]), [int(s) for s in sys.argv[2].split(",")], int(sys.argv[3]), int(sys.argv[4])
    port = 29500 + os.getpid() % 1000
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(worker, args=(world, sizes, reps, inner, port, queue), nprocs=world, start_method="spawn")
    print(json.dumps(queue.get()))
