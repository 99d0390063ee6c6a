#!/usr/bin/env python3
"""PyTorch CPU peer for NormKit's benchmark, driven line by line over stdin/stdout (JSON), so that
the benchmark can interleave it with NormKit and ONNX Runtime in rounds on the same inputs:

  {"case": {...}, "threads": t, "x": PATH, "dy": PATH}  -> {"ok": true}  (PATH: raw float32 in memory order)
  {"time": {"calls": n, "seconds": s}}                  -> {"ms": [...]} (at least n calls and s seconds)
  {"output": PATH}                                      -> {"ok": true}  (y, or dx for "fwd+bwd", raw float32 in memory order)
  {"quit": true}

It prints {"torch": version} first. Run by the benchmark (Program.cs); the allocator it runs under
(MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_) is set by the caller's environment."""
import json, sys, time
import numpy as np
import torch

# torch 1.13 has no RMSNorm module: the composition users write (eps as the benchmark's RMSNorm).
RMS_EPS = 1e-5


def module(op, shape):
    c = shape[1]
    if op == "RMSNorm":
        w = torch.ones(shape[-1])
        return lambda x: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS) * w
    if op == "DynamicTanh":
        # The official implementation's forward (jiachenzhu/DyT, dynamic_tanh.py), channels last.
        alpha, w, b = torch.full((1,), 0.5), torch.ones(shape[-1]), torch.zeros(shape[-1])
        return lambda x: w * torch.tanh(alpha * x) + b
    if op == "FRN":
        # The paper's listing (Singh & Krishnan 2020), NCHW: eps 1e-6, gamma 1, beta 0, tau 0.
        g, b, tau = torch.ones(1, c, 1, 1), torch.zeros(1, c, 1, 1), torch.zeros(1, c, 1, 1)
        return lambda x: torch.max(g * (x * torch.rsqrt(x.pow(2).mean(dim=(2, 3), keepdim=True) + 1e-6)) + b, tau)
    return {"LayerNorm": lambda: torch.nn.LayerNorm(shape[-1]),
            "BatchNorm2d": lambda: torch.nn.BatchNorm2d(c),
            "BatchNorm1d": lambda: torch.nn.BatchNorm1d(c),
            "GroupNorm(32)": lambda: torch.nn.GroupNorm(32, c),
            "InstanceNorm2d": lambda: torch.nn.InstanceNorm2d(c)}[op]()


def load(path, shape, channels_last):
    """The memory-order floats as an NCHW tensor (a channels_last view when channels_last)."""
    a = torch.from_numpy(np.fromfile(path, dtype=np.float32))
    if channels_last:
        n, c, h, w = shape
        return a.reshape(n, h, w, c).permute(0, 3, 1, 2)
    return a.reshape(shape)


def memory_order(t, channels_last):
    return (t.permute(0, 2, 3, 1) if channels_last else t).contiguous().numpy()


class Case:
    def __init__(self, spec, threads, x_path, dy_path):
        torch.set_num_threads(threads)
        self.cl = spec["channelsLast"]
        self.mode = spec["mode"]
        shape = spec["shape"]
        self.x = load(x_path, shape, self.cl)
        self.dy = load(dy_path, shape, self.cl)
        self.m = module(spec["op"], shape)
        if self.cl and isinstance(self.m, torch.nn.Module):
            self.m = self.m.to(memory_format=torch.channels_last)
        if self.mode == "eval" and isinstance(self.m, torch.nn.Module):
            self.m.eval()
        if self.mode == "fwd+bwd":
            self.x.requires_grad_(True)
        self.result = None

    def run(self):
        if self.mode == "fwd+bwd":
            self.x.grad = None
            y = self.m(self.x)
            y.backward(self.dy)
            self.result = self.x.grad
        else:
            with torch.no_grad():
                self.result = self.m(self.x)


def main():
    torch.set_num_interop_threads(1)
    print(json.dumps({"torch": torch.__version__}), flush=True)
    case = None
    for line in sys.stdin:
        msg = json.loads(line)
        if "quit" in msg:
            break
        if "case" in msg:
            case = None
            case = Case(msg["case"], msg["threads"], msg["x"], msg["dy"])
            for _ in range(3):
                case.run()
            reply = {"ok": True}
        elif "time" in msg:
            n, seconds = msg["time"]["calls"], msg["time"]["seconds"]
            times = []
            start = time.perf_counter()
            while len(times) < n or time.perf_counter() - start < seconds:
                t0 = time.perf_counter()
                case.run()
                times.append((time.perf_counter() - t0) * 1e3)
            reply = {"ms": times}
        elif "output" in msg:
            case.run()
            memory_order(case.result.detach(), case.cl).tofile(msg["output"])
            reply = {"ok": True}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
