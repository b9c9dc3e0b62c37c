"""The recipe's learning-rate schedule fitted to a run's length (harness.run.train.fit_schedule)."""

from __future__ import annotations

from harness.run.train import fit_schedule

WARM = {"type": "LinearLR", "start_factor": 0.001, "by_epoch": False, "begin": 0, "end": 500}
STEP_1X = {"type": "MultiStepLR", "begin": 0, "end": 12, "by_epoch": True, "milestones": [8, 11], "gamma": 0.1}
STEP_3X = {**STEP_1X, "end": 36, "milestones": [27, 33]}
COSINE = {"type": "CosineAnnealingLR", "begin": 0, "end": 55, "by_epoch": True, "eta_min": 0.0}


def test_a_full_1x_run_keeps_the_recipe_in_iterations():
    warm, step = fit_schedule([WARM, STEP_1X], epochs=12, total_iters=12 * 7330)
    assert warm == WARM
    assert step["by_epoch"] is False and step["milestones"] == [8 * 7330, 11 * 7330] and step["end"] == 12 * 7330


def test_a_short_run_decays_at_the_recipes_fractions_with_a_short_warm_up():
    warm, step = fit_schedule([WARM, STEP_1X], epochs=1, total_iters=100)
    assert warm["end"] == 20  # at most a fifth of the run
    assert step["milestones"] == [67, 92] and step["end"] == 100  # 8/12 and 11/12 of 100 iterations
    _, step = fit_schedule([WARM, STEP_1X], epochs=2, total_iters=50)
    assert step["milestones"] == [33, 46]  # not after the first of two epochs
    _, step = fit_schedule([WARM, STEP_3X], epochs=1, total_iters=100)
    assert step["milestones"] == [75, 92]  # a 3x recipe's own fractions, 27/36 and 33/36


def test_a_cosine_anneals_over_the_run_and_unknown_lengths_stay_in_epochs():
    _, cos = fit_schedule([WARM, COSINE], epochs=2, total_iters=80)
    assert cos["by_epoch"] is False and cos["end"] == 80
    warm, step = fit_schedule([WARM, STEP_1X], epochs=24)
    assert warm == WARM and step["by_epoch"] is True and step["milestones"] == [16, 22] and step["end"] == 24
    (cos,) = fit_schedule(COSINE, epochs=3)
    assert cos["end"] == 3 and cos["by_epoch"] is True


def test_the_input_is_not_modified():
    before = dict(STEP_1X, milestones=list(STEP_1X["milestones"]))
    fit_schedule([WARM, STEP_1X], epochs=1, total_iters=10)
    assert STEP_1X == before
