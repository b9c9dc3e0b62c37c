"""A short fixed reference workload, timed beside ``make benchmark`` so that its time compares across machines.

The benchmark's seconds alone cannot tell a slower machine from a slower harness. ``harness benchmark``
therefore also times this workload, on the same machine and in the same invocation, and reports the
benchmark's time as a multiple of it (``results/bench/benchmark.md``): a machine 1.5 times slower takes
about 1.5 times longer for both, and the multiple stays; a harness change that slows the runs moves the
multiple.

The workload is what the benchmark's runs spend their time on: convolutions forward and backward at the
tiny profile's sizes (a batch of 4 images, 32 channels, 64 × 64 and 32 × 32 maps) with one torch thread,
the thread count of a run. It is fixed (seeded inputs, a fixed number of steps; never tuned to a machine)
and runs in a fresh interpreter (``python -m harness.bench.reference``), so that the benchmark's own
process never starts torch's thread pools before the local pool forks its workers. That interpreter
gets the runs' memory allocator (:mod:`harness.run.allocator`: tcmalloc where installed, preloaded as
the local executor preloads it into every run) and reports it: with the C library's malloc the
workload's large buffers are returned to the system and faulted in again at every step, which added
12 to 24 % to it on the developers' machine (2026-12-05: 1.09-1.20 s against 0.94-1.08 s with tcmalloc,
in alternation), a cost that moves with the host's load and that the runs, under tcmalloc, do not pay.
It is timed :data:`REPEATS` times after one untimed warm-up step; the median is the reference.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

STEPS = 20  # training steps of the fixed network per repetition
REPEATS = 3


def workload(steps: int = STEPS, repeats: int = REPEATS) -> str:
    """What the workload is, in words (recorded beside its time)."""
    return (f"{steps} forward + backward steps of a fixed 6-convolution network (3 × 3, 32 channels, batch 4 "
            f"at 64 × 64 and 32 × 32) on 1 torch thread, median of {repeats}")


def run_workload(steps: int = STEPS, repeats: int = REPEATS) -> list[float]:
    """Seconds of each timed repetition of the workload, in this process (one torch thread meanwhile)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(0)
        convs = [torch.nn.Conv2d(32, 32, 3, padding=1) for _ in range(6)]
        for conv in convs:
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.05)
                conv.bias.zero_()
        images = torch.randn(4, 32, 64, 64, generator=gen)

        def step() -> None:
            x = images
            for i, conv in enumerate(convs):
                x = torch.relu(conv(x))
                if i == 2:
                    x = torch.nn.functional.max_pool2d(x, 2)
            x.square().mean().backward()
            for conv in convs:
                conv.weight.grad = conv.bias.grad = None

        step()  # warm-up: allocations and kernel selection, not timed
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(steps):
                step()
            times.append(time.perf_counter() - started)
        return times
    finally:
        torch.set_num_threads(threads)


def measure(timeout_s: float = 300.0, steps: int = STEPS, repeats: int = REPEATS) -> dict:
    """The workload timed in a fresh interpreter with the runs' allocator: ``{"seconds": median, "repeats":
    [...], "workload": ..., "allocator": ...}``. RuntimeError (one line) when that interpreter fails or
    ``HARNESS_ALLOCATOR`` is not a known value."""
    from harness.run.allocator import preloaded

    try:
        with preloaded():
            done = subprocess.run([sys.executable, "-m", "harness.bench.reference", str(steps), str(repeats)],
                                  capture_output=True, text=True, timeout=timeout_s, check=False)
    except ValueError as exc:  # HARNESS_ALLOCATOR set to something else than system or tcmalloc
        raise RuntimeError(str(exc)) from None
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the reference workload took more than {timeout_s:g} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the reference workload failed (exit {done.returncode}): {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    """``python -m harness.bench.reference [STEPS [REPEATS]]``: time the workload here and print one JSON
    line (what :func:`measure` reads)."""
    from harness.run.allocator import in_use

    args = [int(a) for a in (sys.argv[1:] if argv is None else argv)]
    steps, repeats = (args + [STEPS, REPEATS][len(args):])[:2]
    times = run_workload(steps, repeats)
    print(json.dumps({"seconds": round(statistics.median(times), 3), "repeats": [round(t, 3) for t in times],
                      "workload": workload(steps, repeats), "allocator": in_use()}))


if __name__ == "__main__":
    main()
