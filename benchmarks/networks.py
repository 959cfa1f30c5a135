"""Parameters, GFLOP and CPU forward time of every registered network at its default width.

GFLOP per 1 x 1 x 12 x 128 x 128 window are counted by torch.utils.flop_counter
on the meta device (exact for convs/matmuls, no compute); so are the bytes autograd
saves for backward in a batch-8 training forward (a GPU-free proxy for training memory). CPU time is the median
of ``--repeat`` eval-mode forwards after one warm-up, on ``--threads`` threads.

    .venv/bin/python benchmarks/networks.py [--names hybrid resunet] [--repeat 3] [--threads 2] [--no-time]

Budget for ``hybrid`` (issue 3): <= 10 M parameters and <= 40 GFLOP per window.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from spineseg.networks import build_network, network_names
from spineseg.networks.blocks import set_hanc_checkpointing

WINDOW = (12, 128, 128)
BUDGET = {"params_m": 10.0, "gflop": 40.0}


def count(name: str, out_channels: int):
    with torch.device("meta"):
        net = build_network(name, out_channels=out_channels)
        params = sum(p.numel() for p in net.parameters())
        with FlopCounterMode(display=False) as counter:
            net(torch.empty(1, 1, *WINDOW))
    return params / 1e6, counter.get_total_flops() / 1e9


def saved_for_backward(name: str, out_channels: int, batch: int = 8, hanc_checkpoint: bool = False) -> float:
    """GiB of tensors autograd saves for backward in one fp32 training forward at ``batch`` (meta device).

    A GPU-free proxy for training memory: views are counted separately and
    weights, optimiser state and transient workspaces are not counted; bf16
    autocast roughly halves it.
    """
    sizes = {}

    def pack(t):
        sizes[id(t)] = t.numel() * t.element_size()
        return t

    with torch.device("meta"):
        net = build_network(name, out_channels=out_channels).train()
        set_hanc_checkpointing(net, hanc_checkpoint)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = net(torch.empty(batch, 1, *WINDOW))
    del y
    return sum(sizes.values()) / 2**30


def cpu_time(name: str, out_channels: int, repeat: int) -> float:
    torch.manual_seed(0)
    net = build_network(name, out_channels=out_channels).eval()
    x = torch.randn(1, 1, *WINDOW)
    times = []
    with torch.inference_mode():
        net(x)  # warm-up (allocations, oneDNN primitive creation)
        for _ in range(repeat):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", nargs="*", default=list(network_names()))
    ap.add_argument("--out-channels", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-time", action="store_true", help="only parameters and FLOPs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    print(f"window 1x1x{'x'.join(map(str, WINDOW))}, out_channels {args.out_channels}, torch {torch.__version__}, "
          f"{args.threads} CPU threads")
    print()
    print("| network | params (M) | GFLOP / window | saved for backward, fp32, batch 8 (GiB) | CPU forward (s) "
          "| within hybrid budget |")
    print("|---|---:|---:|---:|---:|---|")
    for name in args.names:
        params, gflop = count(name, args.out_channels)
        saved = saved_for_backward(name, args.out_channels)
        t = "" if args.no_time else f"{cpu_time(name, args.out_channels, args.repeat):.2f}"
        ok = "yes" if params <= BUDGET["params_m"] and gflop <= BUDGET["gflop"] else "no"
        print(f"| {name} | {params:.2f} | {gflop:.1f} | {saved:.2f} | {t} | {ok} |", flush=True)
        if name in ("hybrid", "no-ux"):
            saved = saved_for_backward(name, args.out_channels, hanc_checkpoint=True)
            print(f"| {name}, HANC checkpointed | | | {saved:.2f} | | |", flush=True)


if __name__ == "__main__":
    main()
