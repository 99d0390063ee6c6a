#!/usr/bin/env python3
"""PyTorch CPU peer for NormKit's benchmark: times the same cases (training forward,
forward+backward, eval) at the given thread counts and prints JSON {"<case>|<threads>": ms}.
Run by `normkit bench`; by hand: python3 torch_peer.py cases.json out.json"""
import json, statistics, sys, time
import torch

def module(op, shape, channels_last):
    c = shape[1]
    m = {"LayerNorm": lambda: torch.nn.LayerNorm(shape[-1]),
         "RMSNorm": None,
         "BatchNorm2d": lambda: torch.nn.BatchNorm2d(c),
         "BatchNorm1d": lambda: torch.nn.BatchNorm1d(c),
         "GroupNorm(32)": lambda: torch.nn.GroupNorm(32, c),
         "InstanceNorm2d": lambda: torch.nn.InstanceNorm2d(c)}[op]
    if m is None:
        # torch 1.13 has no RMSNorm module: the composition users write.
        w = torch.ones(shape[-1])
        return lambda x: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1.1920929e-07) * w
    mod = m()
    if channels_last:
        mod = mod.to(memory_format=torch.channels_last)
    return mod

def time_case(case, reps_min=5, budget=0.6):
    op, shape, cl, mode = case["op"], case["shape"], case["channelsLast"], case["mode"]
    torch.manual_seed(1)
    x = torch.rand(shape) * 4 - 1
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    m = module(op, shape, cl)
    if mode == "eval" and hasattr(m, "eval"):
        m.eval()
    dy = torch.rand_like(x) - 0.5
    if mode == "fwd+bwd":
        x.requires_grad_(True)
        def run():
            x.grad = None
            y = m(x)
            y.backward(dy)
    else:
        def run():
            with torch.no_grad():
                m(x)
    for _ in range(3):
        run()
    times = []
    start = time.perf_counter()
    while len(times) < reps_min or (time.perf_counter() - start < budget and len(times) < 60):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)

def main():
    spec = json.load(open(sys.argv[1]))
    torch.set_num_interop_threads(1)
    out = {"torch": torch.__version__}
    for threads in spec["threads"]:
        torch.set_num_threads(threads)
        for case in spec["cases"]:
            out[f'{case["key"]}|{threads}'] = time_case(case)
    json.dump(out, open(sys.argv[2], "w"), indent=1)

if __name__ == "__main__":
    main()
