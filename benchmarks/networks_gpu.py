"""GPU training throughput of every network: one bf16-autocast training step at batch 8 on 12x128x128 windows.

Prints, per network and mode, windows/s (timed steps after warm-up, CUDA
synchronised) and peak GPU memory (torch.cuda.max_memory_allocated over the
timed steps: activations, gradients, optimiser state). Modes: ``eager``,
``channels_last`` (channels_last_3d tensors; in-plane ops then run as folded 2D
NHWC kernels), ``compile`` (torch.compile), ``compile+channels_last``; each
also with ``+ckpt`` (HANC branches recomputed in backward instead of stored).

    .venv/bin/python benchmarks/networks_gpu.py                      # all networks, default modes
    .venv/bin/python benchmarks/networks_gpu.py --names hybrid --modes eager channels_last compile compile+channels_last
    .venv/bin/python benchmarks/networks_gpu.py --names hybrid --profile --modes eager   # top CUDA ops

Exits with status 2 and a message when no CUDA device exists. ``--dry-run-cpu``
runs the same code on the CPU with 1 step at batch 1 to check the script, not
to time anything (its numbers are not GPU numbers).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from spineseg.networks import build_network, network_names
from spineseg.networks.blocks import set_hanc_checkpointing, to_channels_last

MODES = ("eager", "channels_last", "compile", "compile+channels_last")
# any mode may end in "+ckpt": HANC branches recomputed in backward (less memory, a little more time)
MODES = MODES + tuple(m + "+ckpt" for m in MODES)


def make_step(name: str, mode: str, device: torch.device, batch: int, window, out_channels: int):
    torch.manual_seed(0)
    net = build_network(name, out_channels=out_channels).to(device).train()
    if mode.endswith("+ckpt"):
        set_hanc_checkpointing(net, True)
    x = torch.randn(batch, 1, *window, device=device)
    y = torch.randint(0, out_channels, (batch, *window), device=device)
    if "channels_last" in mode:
        to_channels_last(net)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=device.type == "cuda")
    model = torch.compile(net) if "compile" in mode else net

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step, device: torch.device, batch: int, warmup: int, steps: int):
    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return batch * steps / seconds, peak


def profile(step, device: torch.device, rows: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with tprofile(activities=activities, record_shapes=True) as prof:
        for _ in range(3):
            step()
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", nargs="*", default=list(network_names()))
    ap.add_argument("--modes", nargs="*", default=["eager", "compile+channels_last", "compile+channels_last+ckpt"],
                    choices=MODES)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--window", type=int, nargs=3, default=[12, 128, 128], metavar=("D", "H", "W"))
    ap.add_argument("--out-channels", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=5, help="steps before timing (compile happens here)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--profile", action="store_true", help="print the top ops of 3 steps per network/mode")
    ap.add_argument("--profile-rows", type=int, default=25)
    ap.add_argument("--dry-run-cpu", action="store_true", help="check the script on CPU (batch 1, 1 step); no timings")
    args = ap.parse_args()

    if args.dry_run_cpu:
        device = torch.device("cpu")
        args.batch, args.warmup, args.steps = 1, 0, 1
        args.window = [min(args.window[0], 2), 64, 64]
    else:
        if not torch.cuda.is_available():
            print("networks_gpu: no CUDA device found (torch.cuda.is_available() is False); run this on a machine "
                  "with an NVIDIA GPU and a CUDA build of PyTorch, or use --dry-run-cpu to check the script",
                  file=sys.stderr)
            return 2
        device = torch.device(args.device)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run, not a timing)"
    print(f"{where}; torch {torch.__version__}; batch {args.batch}, window {'x'.join(map(str, args.window))}, "
          f"bf16 autocast, AdamW; {args.warmup} warm-up + {args.steps} timed steps")
    print()
    rows = []
    for name in args.names:
        for mode in args.modes:
            try:
                step = make_step(name, mode, device, args.batch, args.window, args.out_channels)
                speed, peak = measure(step, device, args.batch, args.warmup, args.steps)
                if args.profile:
                    print(f"## {name} / {mode}")
                    profile(step, device, args.profile_rows)
                if args.dry_run_cpu:
                    rows.append((name, mode, "ran (dry run)", ""))
                else:
                    rows.append((name, mode, f"{speed:.1f}", f"{peak:.2f}"))
            except torch.cuda.OutOfMemoryError:
                rows.append((name, mode, "OOM", "OOM"))
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            print(f"  {name} / {mode}: {rows[-1][2]} windows/s, {rows[-1][3]} GiB", file=sys.stderr, flush=True)
    print("| network | mode | windows/s | peak GiB |")
    print("|---|---|---:|---:|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
