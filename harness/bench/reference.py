"""A short fixed reference workload, timed beside ``make benchmark`` so that its time compares across machines.

The benchmark's seconds alone cannot tell a slower machine from a slower harness. ``harness benchmark``
therefore also times this workload, on the same machine and in the same invocation, and reports the
benchmark's time as a multiple of it (``results/bench/benchmark.md``): a machine 1.5 times slower takes
about 1.5 times longer for both, and the multiple stays; a harness change that slows the runs moves the
multiple.

**What it is.** The benchmark's own kind of work, without the harness's code: training steps and test
batches of two of the grid's detectors as mmdet ships them (Faster R-CNN and ATSS from mmdet's own configs,
with mmdet's own losses and mmcv's own kernels), cut to the tiny profile's sizes by a fixed list of changes
(:data:`TINY`: ResNet-18 at a quarter width, a 32-channel FPN, 128 × 128 images, 100 proposals), on a fixed
seeded batch of 4 images, one torch thread. It therefore mixes what a run's time is made of, in about the
proportions a run has them: convolutions forward and backward, mmdet's thousands of small tensor operations
and Python a step (anchors, assignment, sampling, RoIAlign, NMS), the optimiser. Nothing in it is the
harness's, so a slower harness cannot slow the reference with it.

Why not a convolution-only workload (what this was until 2026-12-05): on the developers' machine the grid's
runs slowed 1.4 to 1.8 times from one hour to the next while a fixed stack of convolutions slowed 1.2 to
1.65 times, so the multiple drifted by a quarter (668 to 826 × with no harness change but speed-ups): the
host's load weighs more on Python-heavy, small-operation work than on long vectorised loops.

**How it is timed.** In fresh interpreters (``python -m harness.bench.reference``), so that the
benchmark's own process never starts torch's thread pools, with the runs' memory allocator
(:mod:`harness.run.allocator`: tcmalloc where installed, preloaded as the local executor preloads it into
every run; recorded). As many interpreters as the benchmark runs at once (its slots, two on 2 cores) run
the workload together, since the runs share the machine that way: each builds the models and takes one
untimed warm-up step, then all start timing together (a line on their standard input), each timing
:data:`REPEATS` repetitions of :data:`STEPS` training steps and one test batch per detector. The reference
is the median of all the repetitions. A full ``make benchmark`` times it twice, before its runs and after
them (:data:`REPEATS_EACH_SIDE` repetitions each, :func:`combined`): on the developers' shared machine the
speed moved by 10 % and more within one 15-minute run, and a reference timed at one end alone then misreads
the run; benchmark.md gives both times and the drift between them.
"""

from __future__ import annotations

import json
import queue
import statistics
import subprocess
import sys
import threading
import time

STEPS = 5  # training steps of each detector per repetition (each repetition also tests one batch)
REPEATS = 3  # timed repetitions per interpreter
REPEATS_EACH_SIDE = 2  # per interpreter, when timed both before and after a benchmark's runs (combined)
PROCESSES = 2  # interpreters at once: the benchmark's run slots on the developers' 2 cores
READY, GO = "ready", "go"  # the interpreters' start barrier (see measure)

# mmdet's configs (its shipped files) and the changes that make them the tiny profile's sizes. Fixed: a
# change here changes the reference, and earlier multiples stop being comparable.
DETECTORS = {"faster_rcnn": "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", "atss": "atss/atss_r50_fpn_1x_coco.py"}
TINY = {
    "backbone": {"depth": 18, "base_channels": 16, "init_cfg": None, "frozen_stages": -1, "norm_eval": False},
    "neck": {"in_channels": [16, 32, 64, 128], "out_channels": 32},
    "rpn_head": {"in_channels": 32, "feat_channels": 32},
    "roi_head.bbox_roi_extractor": {"out_channels": 32},
    "roi_head.bbox_head": {"in_channels": 32, "fc_out_channels": 64, "num_classes": 8},
    "train_cfg.rpn_proposal": {"nms_pre": 200, "max_per_img": 100},
    "test_cfg.rpn": {"nms_pre": 200, "max_per_img": 100},
    "bbox_head": {"in_channels": 32, "feat_channels": 32, "stacked_convs": 2, "num_classes": 8},
}
IMAGES, SIZE, OBJECTS = 4, 128, 3  # the fixed batch: images of SIZE x SIZE with OBJECTS boxes each


def workload(steps: int = STEPS, repeats: int = REPEATS, processes: int = PROCESSES, sides: int = 1) -> str:
    """What the workload is, in words (recorded beside its time). ``sides``: 2 when it was timed before and
    after a benchmark's runs (:func:`combined`), ``repeats`` each time."""
    what = (f"{steps} training steps and 1 test batch of each of mmdet's own Faster R-CNN and ATSS at the tiny "
            f"profile's sizes (batch {IMAGES} at {SIZE} × {SIZE}, 1 torch thread), {processes} at once as the "
            f"runs share the machine")
    if sides == 2:
        return f"{what}, timed before the runs and after them, median of both times' {2 * processes * repeats} repetitions"
    return f"{what}, median of {processes} × {repeats}"


def _models() -> list:
    """The two detectors, built from mmdet's shipped configs with :data:`TINY`'s changes."""
    from pathlib import Path

    import mmdet
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    configs = Path(mmdet.__file__).resolve().parent / ".mim" / "configs"
    models = []
    for path in DETECTORS.values():
        model = Config.fromfile(configs / path).model
        for dotted, values in TINY.items():
            node = model
            for key in dotted.split("."):
                node = node.get(key) if node is not None else None
            if node is not None:  # the sections this detector has (ATSS: no RPN, no RoI head)
                node.update(values)
        models.append(MODELS.build(model))
    return models


def _batch():
    """The fixed, seeded batch: images and their ground-truth boxes."""
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    gen = torch.Generator().manual_seed(0)
    images = torch.randn(IMAGES, 3, SIZE, SIZE, generator=gen)
    samples = []
    for _ in range(IMAGES):
        sample = DetDataSample(metainfo={"img_shape": (SIZE, SIZE), "ori_shape": (SIZE, SIZE),
                                         "pad_shape": (SIZE, SIZE), "batch_input_shape": (SIZE, SIZE),
                                         "scale_factor": (1.0, 1.0)})
        corner = torch.rand(OBJECTS, 2, generator=gen) * (SIZE * 0.6)
        size = torch.rand(OBJECTS, 2, generator=gen) * (SIZE * 0.3) + 8
        sample.gt_instances = InstanceData(bboxes=torch.cat([corner, corner + size], 1),
                                           labels=torch.randint(0, 8, (OBJECTS,), generator=gen))
        samples.append(sample)
    return images, samples


def run_workload(steps: int = STEPS, repeats: int = REPEATS, ready=None) -> list[float]:
    """Seconds of each timed repetition of the workload, in this process (one torch thread meanwhile).
    ``ready``: called after the models are built and warmed up, before the first timed repetition (the
    start barrier of :func:`measure`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        models = _models()
        images, samples = _batch()
        optimizers = [torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for m in models]

        def repetition(n_steps: int) -> None:
            for model, optimizer in zip(models, optimizers):
                model.train()
                for _ in range(n_steps):
                    losses = model.loss(images, samples)
                    total = sum(v if torch.is_tensor(v) else sum(v) for k, v in losses.items() if "loss" in k)
                    optimizer.zero_grad()
                    total.backward()
                    optimizer.step()
                model.eval()
                with torch.no_grad():
                    model.predict(images, samples)

        repetition(1)  # warm-up: allocations, kernel selection, lazily built parts; not timed
        if ready is not None:
            ready()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            repetition(steps)
            times.append(time.perf_counter() - started)
        return times
    finally:
        torch.set_num_threads(threads)


def _command(steps: int, repeats: int) -> list[str]:
    """One interpreter of :func:`measure`: the workload behind the start barrier."""
    return [sys.executable, "-m", "harness.bench.reference", "--barrier", str(steps), str(repeats)]


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def measure(timeout_s: float = 300.0, steps: int = STEPS, repeats: int = REPEATS,
            processes: int = PROCESSES) -> dict:
    """The workload timed in ``processes`` fresh interpreters at once, with the runs' allocator: ``{"seconds":
    median of every repetition, "repeats": [...], "processes": n, "workload": ..., "allocator": ...}``.
    RuntimeError (one line) when an interpreter fails, the whole takes over ``timeout_s``, or
    ``HARNESS_ALLOCATOR`` is not a known value."""
    from harness.run.allocator import preloaded

    deadline = time.monotonic() + timeout_s
    try:
        with preloaded():
            procs = [subprocess.Popen(_command(steps, repeats), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    except ValueError as exc:  # HARNESS_ALLOCATOR set to something else than system or tcmalloc
        raise RuntimeError(str(exc)) from None
    try:
        outputs = [queue.Queue() for _ in procs]
        errors = [[] for _ in procs]
        readers = [threading.Thread(target=lambda s, e: e.extend(s), args=(proc.stderr, err), daemon=True)
                   for proc, err in zip(procs, errors)]
        for proc, out, reader in zip(procs, outputs, readers):
            threading.Thread(target=_lines, args=(proc.stdout, out), daemon=True).start()
            reader.start()

        def next_line(i: int) -> str:
            try:
                line = outputs[i].get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                raise RuntimeError(f"the reference workload took more than {timeout_s:g} s") from None
            if line is None:
                code = procs[i].wait()
                readers[i].join(timeout=10)  # its standard error read to the end, last line included
                last = ("".join(errors[i]).strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(f"the reference workload failed (exit {code}): {last}")
            return line.strip()

        for i in range(len(procs)):  # every interpreter built and warmed up ...
            while next_line(i) != READY:
                pass
        for proc in procs:  # ... then all of them start timing together
            proc.stdin.write(GO + "\n")
            proc.stdin.flush()
        results = []
        for i in range(len(procs)):
            line = next_line(i)
            while not line.startswith("{"):
                line = next_line(i)
            results.append(json.loads(line))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    times = [t for r in results for t in r["repeats"]]
    return {"seconds": round(statistics.median(times), 3), "repeats": times, "processes": len(procs),
            "workload": workload(steps, repeats, len(procs)), "allocator": results[0]["allocator"]}


def combined(before: dict | None, after: dict | None) -> dict | None:
    """One reference from the workload timed before the runs and after them (:func:`measure` twice): the
    median of all their repetitions, with each time's own median kept (``before``, ``after``), so that a
    machine whose speed drifts during a long run is seen, and the multiple reflects the whole run rather
    than its last minute. Either alone when the other is missing; None without both."""
    if not before or not after:
        return before or after
    times = list(before["repeats"]) + list(after["repeats"])
    per = len(before["repeats"]) // max(before["processes"], 1)
    return {"seconds": round(statistics.median(times), 3), "repeats": times, "processes": before["processes"],
            "workload": workload(STEPS, per, before["processes"], sides=2),
            "allocator": after["allocator"], "before": before["seconds"], "after": after["seconds"]}


def main(argv: list[str] | None = None) -> None:
    """``python -m harness.bench.reference [--barrier] [STEPS [REPEATS]]``: time the workload here and print
    one JSON line (what :func:`measure` reads). ``--barrier``: after warming up, print ``ready`` and wait for
    a line on standard input before timing."""
    from harness.run.allocator import in_use

    args = list(sys.argv[1:] if argv is None else argv)
    barrier = "--barrier" in args
    numbers = [int(a) for a in args if a != "--barrier"]
    steps, repeats = (numbers + [STEPS, REPEATS][len(numbers):])[:2]

    def wait_for_go() -> None:
        print(READY, flush=True)
        sys.stdin.readline()

    times = run_workload(steps, repeats, ready=wait_for_go if barrier else None)
    print(json.dumps({"seconds": round(statistics.median(times), 3), "repeats": [round(t, 3) for t in times],
                      "workload": workload(steps, repeats, 1), "allocator": in_use()}), flush=True)


if __name__ == "__main__":
    main()
