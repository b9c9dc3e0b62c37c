"""Every cell of the 7 x 5 grid trains and predicts: `check-cell` logic for all 35 cells (tiny profile, CPU),
the same heads with losses they have never seen, and the `cells` / `check-cell` / `bench-steps` commands."""

from __future__ import annotations

import contextlib
import warnings

import pytest

from harness.cli import main
from harness.detectors import DETECTOR_NAMES, LOSS_NAMES, cells, get_detector

ALL_CELLS = cells()


def test_the_grid_has_35_cells_none_missing():
    assert len(ALL_CELLS) == 35 == len(set(ALL_CELLS))
    assert {d for d, _ in ALL_CELLS} == set(DETECTOR_NAMES) and {x for _, x in ALL_CELLS} == set(LOSS_NAMES)


def _check(detector, loss, **kwargs):
    from harness.detectors.check import check_cell

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return check_cell(detector, loss, raise_on_failure=False, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("detector,loss", ALL_CELLS, ids=[f"{d}-{x}" for d, x in ALL_CELLS])
def test_cell_trains_one_step_and_predicts(detector, loss):
    report = _check(detector, loss)
    assert report.ok, report.problems
    det = get_detector(detector)
    # finite losses, and a total that is the sum of the loss terms
    assert report.losses and all(v == v and abs(v) != float("inf") for v in report.losses.values())
    terms = sum(v for k, v in report.losses.items() if "loss" in k and k != "loss")
    assert report.losses["loss"] == pytest.approx(terms, rel=1e-4)
    # the gradient reaches every classification layer
    assert set(report.cls_grad_norms) == set(det.cls_layers)
    assert all(v > 0 for v in report.cls_grad_norms.values())
    # inference: boxes (and masks for the mask detectors) for both images
    assert len(report.detections) == 2 and min(report.detections) > 0
    if "segm" in det.outputs:
        assert report.masks == report.detections


@pytest.mark.slow
def test_ranking_cells_report_their_components():
    rs = _check("atss", "rs")
    assert {"rank", "sort", "w_bbox"} <= set(rs.losses)
    # value-based balancing: the box term equals the RS value
    assert rs.losses["loss_bbox"] == pytest.approx(rs.losses["loss_cls"], rel=1e-5)
    alrp = _check("faster_rcnn", "alrp")
    assert alrp.losses["w_bbox"] == 50 and alrp.losses["rpn_w_bbox"] == 50  # SB starts at 50
    # the RPN's terms carry the RS recipe's head weight 0.2
    rs_rcnn = _check("faster_rcnn", "rs")
    assert rs_rcnn.losses["loss_rpn_cls"] == pytest.approx(0.2 * (rs_rcnn.losses["rpn_rank"] + rs_rcnn.losses["rpn_sort"]),
                                                           rel=1e-4)
    solo = _check("solov2", "rs")
    assert solo.losses["loss_mask"] == pytest.approx(solo.losses["loss_cls"], rel=1e-5)


# --------------------------------------------------------------------- losses the heads have never seen

@contextlib.contextmanager
def _registered(*specs):
    from harness.losses import registry

    try:
        for spec in specs:
            registry.register_loss(spec)
        yield
    finally:
        for spec in specs:
            registry._REGISTRY.pop(spec.name, None)


def _unseen_losses():
    """Three new losses, one per behaviour a head must follow from the spec alone."""
    from harness.losses import (ClassificationOutput, LossSpec, alrp_classification_loss, cross_entropy_loss,
                                rank_sort_loss)

    def quality(logits, targets, loc_errors=None, delta=1.0):
        out = rank_sort_loss(logits, targets, delta=delta)
        return ClassificationOutput(out.total, {"q": out.total.detach()})

    def pointwise(logits, targets, loc_errors=None):
        x = cross_entropy_loss(logits, targets)
        return ClassificationOutput(x, {"bce": x.detach()})

    def with_errors(logits, targets, loc_errors=None):
        x, ranks = alrp_classification_loss(logits, targets, loc_errors, delta=0.5)
        return ClassificationOutput(x, {"e": x.detach()}, ranks=ranks)

    return (
        LossSpec(name="unseen_quality", summary="t", fn=rank_sort_loss, classify=quality, targets="quality",
                 ranking=True, balancing="value", defaults={"delta": 1.0}, module=__name__),
        LossSpec(name="unseen_pointwise", summary="t", fn=cross_entropy_loss, classify=pointwise, targets="binary",
                 ranking=False, balancing="fixed", module=__name__),
        LossSpec(name="unseen_errors", summary="t", fn=alrp_classification_loss, classify=with_errors,
                 targets="binary", ranking=True, balancing="self_balance", uses_loc_errors=True, module=__name__),
    )


@pytest.mark.slow
def test_a_new_registered_loss_trains_every_detector_without_touching_a_head():
    unseen = _unseen_losses()
    with _registered(*unseen):
        for detector in DETECTOR_NAMES:
            for spec in unseen:
                report = _check(detector, spec.name)
                assert report.ok, (detector, spec.name, report.problems)
                own = {"unseen_quality": "q", "unseen_pointwise": "bce", "unseen_errors": "e"}[spec.name]
                # the new loss's own components are logged (R-CNNs prefix them rpn_ / s0.)
                assert any(k.rsplit(".", 1)[-1].removeprefix("rpn_") == own for k in report.losses), report.losses
                if spec.balancing == "self_balance":
                    term = "w_" + get_detector(detector).loc_terms[0]
                    weights = [v for k, v in report.losses.items() if k.rsplit(".", 1)[-1] == term]
                    assert weights and all(v == 50.0 for v in weights)  # self-balance starts at 50


# ------------------------------------------------------------------------------------------ commands

def test_cells_command_lists_35_cells(capsys):
    assert main(["cells"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "35 cells (paper profile)"
    body = out[2:]
    assert len(body) == 35
    assert any(line.split()[:5] == ["atss", "rs", "rank", "0.008", "16"] for line in body)


def test_cells_command_shows_a_cells_changes(capsys):
    assert main(["cells", "--changes", "atss", "rs", "--profile", "paper"]) == 0
    out = capsys.readouterr().out
    assert "model.bbox_head.type = 'RankATSSHead'" in out and "model.bbox_head.loss_centerness = deleted" in out


@pytest.mark.parametrize("argv,message", [
    (["check-cell", "atts", "rs"], "unknown detector 'atts'; valid: faster_rcnn, cascade_rcnn, atss, paa, mask_rcnn, yolact, solov2"),
    (["check-cell", "atss", "rss"], "unknown loss 'rss'; valid: alrp, ap, bucketed_ap, bucketed_rs, ce, focal, rs"),
    (["cells", "--changes", "yolo", "rs"], "unknown detector 'yolo'"),
    (["cells", "--profile", "huge"], "unknown profile 'huge'; valid: tiny, paper"),
    (["bench-steps", "--only", "atss"], "--only atss: expected DETECTOR:LOSS"),
])
def test_unknown_names_exit_2_with_the_valid_choices(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.slow
def test_check_cell_command_prints_components(capsys):
    assert main(["check-cell", "paa", "rs"]) == 0
    out = capsys.readouterr().out
    for token in ("loss_cls", "loss_bbox", "rank", "sort", "grad |bbox_head.atss_cls|", "detections per image", "ok"):
        assert token in out


@pytest.mark.slow
def test_check_cell_command_fails_on_a_broken_cell(capsys, monkeypatch):
    from harness.detectors import check

    def broken(detector, loss, **kwargs):
        report = check.CellReport(detector, loss, "tiny", losses={"loss": float("nan")}, problems=["loss is nan"])
        raise check.CellCheckFailed(report)

    monkeypatch.setattr(check, "check_cell", broken)
    assert main(["check-cell", "atss", "rs"]) == 1
    assert "FAIL loss is nan" in capsys.readouterr().out


@pytest.mark.slow
def test_step_benchmark_writes_markdown_and_csv(tmp_path):
    from harness.detectors.bench_steps import run_step_benchmark

    result = run_step_benchmark(tmp_path / "steps", repeats=1, warmup=1, cells=[("atss", "focal"), ("atss", "rs")],
                                target_rounds=1, log=lambda s: None)
    md = (tmp_path / "steps.md").read_text()
    csv = (tmp_path / "steps.csv").read_text().splitlines()
    assert csv[0] == "detector,loss,family,median_ms,min_ms,steps" and len(csv) == 3
    assert "| ATSS |" in md and "RS-ATSS step / Focal-ATSS step" in md
    assert result["target"]["ratio"] > 0 and result["target"]["limit"] == 1.15
