"""`harness bench-phases`: a timer on each part of a run's model (harness.bench.phases), nested phases
inclusive and in call order, and the report of a real Mask R-CNN and YOLACT run through the command line."""

from __future__ import annotations

import csv

import pytest

from cli import harness
from harness.bench import phases as ph


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Model:
    """train_step -> extract_feat (2 s) -> head.loss (3 s) -> head.forward (1 s); evaluate is a root."""

    def __init__(self, clock, phases):
        self.clock, self.phases = clock, phases
        self.head = Head(clock)

    def train_step(self):
        self.extract_feat()
        self.head.loss()
        self.evaluate()  # a root phase called inside another: not recorded
        self.clock.now += 0.5  # the step's own time

    def extract_feat(self):
        self.clock.now += 2

    def evaluate(self):
        self.clock.now += 0.25


class Head:
    def __init__(self, clock):
        self.clock = clock

    def loss(self):
        self.forward()
        self.clock.now += 2

    def forward(self):
        self.clock.now += 1


def test_nested_phases_are_inclusive_in_call_order_and_roots_only_at_the_top(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(ph.time, "perf_counter", clock)
    phases = ph.Phases()
    model = Model(clock, phases)
    phases.wrap(model, "train_step", ph.TRAIN, root=True)
    phases.wrap(model.head, "loss", "head")
    phases.wrap(model.head, "forward", "head forward")
    phases.wrap(model, "extract_feat", "backbone")
    phases.wrap(model, "evaluate", "evaluation", root=True)
    phases.wrap(model, "extract_feat", "twice")  # a second timer on the same method is not added
    for _ in range(2):
        model.train_step()
    model.evaluate()  # at the top: recorded
    assert phases.seconds[(ph.TRAIN,)] == pytest.approx(2 * 5.75)
    assert phases.seconds[(ph.TRAIN, "head")] == pytest.approx(6)
    assert phases.seconds[(ph.TRAIN, "head", "head forward")] == pytest.approx(2)
    assert phases.seconds[("evaluation",)] == pytest.approx(0.25)
    assert (ph.TRAIN, "evaluation") not in phases.seconds and (ph.TRAIN, "twice") not in phases.seconds
    rows = phases.table(ph.TRAIN, 2, [("outside", 1.0)])
    assert [(d, label) for d, label, _, _ in rows] == [
        (0, ph.TRAIN), (1, "backbone"), (1, "head"), (2, "head forward"), (1, "outside")]
    by = {label: (ms, share) for _, label, ms, share in rows}
    assert by[ph.TRAIN] == (pytest.approx(1000 * 12.5 / 2), 1.0)  # 11.5 s of steps + 1 s outside, per iteration
    assert by["head"] == (pytest.approx(3000), pytest.approx(6 / 12.5))
    assert by["outside"][1] == pytest.approx(1 / 12.5)


@pytest.mark.slow
def test_bench_phases_reports_where_mask_rcnn_and_yolact_runs_spend_their_time(tmp_path):
    out = tmp_path / "phases"
    proc = harness("bench-phases", "--only", "mask_rcnn:rs", "--only", "yolact:rs", "--max-iters", "2",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    for det, parts in (("mask_rcnn", ["backbone + neck forward", "RPN targets + loss", "RPN proposals (decode + NMS)",
                                      "RoI assignment", "box RoI features (RoIAlign)", "mask targets", "backward",
                                      "optimizer step", "mask decoding + pasting into the image",
                                      ph.CONVERT, ph.EVALUATE]),
                       ("yolact", ["dense head forward", "dense head targets", "mask head: prototypes, crops, Dice",
                                   "dense head classification loss + balancing of the terms", "backward",
                                   ph.EVALUATE])):
        mine = [r for r in rows if r["detector"] == det]
        assert {p for p in parts} <= {r["phase"] for r in mine}, det
        for kind, unit in (("train", ph.TRAIN), ("test", ph.TEST)):
            table = [r for r in mine if r["kind"] == kind]
            assert table[0]["phase"] == unit and float(table[0]["ms"]) > 0
            top = [float(r["ms"]) for r in table if r["depth"] == "1"]
            # the parts directly under the whole are disjoint: they add up to at most the whole
            assert 0 < sum(top) <= float(table[0]["ms"]) * 1.001, (det, kind, top)
            assert all(0 <= float(r["share"]) <= 1.0001 for r in table)
    text = out.with_suffix(".md").read_text()
    assert "## Mask R-CNN × rs" in text and "## YOLACT × rs" in text and "2 training iterations" in text
    assert text.count("1 torch thread(s)") == 2  # the default spec's runs: cpus_per_run 1


@pytest.mark.parametrize("args, says", [
    (["--max-iters", "0"], "--max-iters must be at least 1"),
    (["--only", "atss"], "expected DETECTOR:LOSS"),
    (["--spec", "experiments/example_new_loss.yaml", "--only", "yolact:rs"], "has no run of yolact:rs"),
    (["--spec", "experiments/coco_1x.yaml", "--only", "atss:rs"], "atss:rs trains in 4 processes"),
])
def test_bench_phases_usage_errors_are_one_line_and_exit_2(args, says, tmp_path):
    proc = harness("bench-phases", *args, "--out", str(tmp_path / "p"))
    assert proc.returncode == 2 and says in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert not list(tmp_path.iterdir())


def test_a_run_that_fails_is_exit_1_with_its_error_and_its_log_kept(tmp_path):
    spec = tmp_path / "nodata.yaml"
    spec.write_text("name: nodata\ndataset: {kind: coco, root: /nonexistent}\nprofile: tiny\ndetectors: [atss]\n"
                    "losses: [rs]\nlaunch: {executor: local, cpus_per_run: 1}\n")
    proc = harness("bench-phases", "--spec", str(spec), "--only", "atss:rs", "--out", str(tmp_path / "p"))
    assert proc.returncode == 1 and "atss:rs failed: DataRootError" in proc.stderr, proc.stderr[-2000:]
    assert (tmp_path / "p.atss-rs.log").is_file() and not (tmp_path / "p.md").exists()


def test_a_report_prefix_with_a_dot_is_written_where_the_command_says(tmp_path):
    """`--out .../phases.2026-12-04` writes phases.2026-12-04.md and .csv (as printed), never phases.md."""
    train = [(0, "iteration", 10.0, 1.0), (1, "forward", 6.0, 0.6)]
    test = [(0, "image", 4.0, 1.0)]
    cell = ph.CellPhases("atss", "rs", 2, 3, train, test, 1)
    (tmp_path / "phases.md").write_text("a default report\n")
    ph.write_report(tmp_path / "phases.2026-12-04", [cell], "experiments/synthetic.yaml")
    assert (tmp_path / "phases.md").read_text() == "a default report\n"
    assert "## ATSS × rs" in (tmp_path / "phases.2026-12-04.md").read_text()
    assert (tmp_path / "phases.2026-12-04.csv").read_text().startswith("detector,loss,kind,depth,phase,ms,share,per")
