"""Activation / softmax forward throughput, nnkernels vs torch (never asserts).

Bytes moved per call: read n + write n elements (napkin math; softmax's second read of a
row comes from cache for rows this size). Output allocation is included for both libraries.
Usage: PYTHONPATH=python python bench/bench_act.py [--n 4194304] [--threads 2] [--dtype float32]
"""

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

import nnkernels
from nnkernels import ops


def best_time(f, reps=15):
    f()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=4 * 1024 * 1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--row", type=int, default=4096, help="softmax row length")
    a = p.parse_args()
    nnkernels.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    x = np.random.default_rng(0).standard_normal(a.n).astype(a.dtype) * 3
    xr = x.reshape(-1, a.row)
    t, tr = torch.from_numpy(x), torch.from_numpy(xr)
    cases = [
        ("relu", lambda: ops.relu(x), lambda: torch.relu(t)),
        ("sigmoid", lambda: ops.sigmoid(x), lambda: torch.sigmoid(t)),
        ("tanh", lambda: ops.tanh(x), lambda: torch.tanh(t)),
        ("gelu", lambda: ops.gelu(x), lambda: F.gelu(t)),
        ("gelu_tanh", lambda: ops.gelu(x, "tanh"), lambda: F.gelu(t, approximate="tanh")),
        (f"softmax rows {a.row}", lambda: ops.softmax(xr), lambda: F.softmax(tr, -1)),
        (f"log_softmax rows {a.row}", lambda: ops.log_softmax(xr), lambda: F.log_softmax(tr, -1)),
        (f"softmax axis 0 ({a.row},...)", lambda: ops.softmax(xr.reshape(a.row, -1), 0),
         lambda: F.softmax(tr.reshape(a.row, -1), 0)),
    ]
    nbytes = 2 * x.nbytes
    print(f"n = {a.n} {a.dtype}, {a.threads} threads, isa {nnkernels.config()['isa']}")
    print(f"{'op':28s} {'nnk ms':>8s} {'torch ms':>9s} {'nnk GB/s':>9s} {'torch GB/s':>10s} {'torch/nnk':>9s}")
    for name, ours, theirs in cases:
        to, tt = best_time(ours), best_time(theirs)
        print(f"{name:28s} {to*1e3:8.2f} {tt*1e3:9.2f} {nbytes/to/1e9:9.1f} {nbytes/tt/1e9:10.1f} {tt/to:9.2f}")


if __name__ == "__main__":
    main()
