"""Which runs of a results folder are current: `harness run` records its spec's runs in spec.json, and
status and tables read it without --spec. Rows of runs an edited spec no longer has are superseded: never
shown as done, never put beside the edited spec's cells. `harness status` exits 1 on trouble."""

from __future__ import annotations

import json
import warnings

import yaml

from harness.cli import main
from harness.experiments.spec import load_spec
from harness.launch.manifest import manifest_path
from harness.launch.status import experiment_status
from harness.rows import read_spec_record, record_spec, spec_record_path, write_row
from harness.run.job import RunLock, work_dir


def spec_at(tmp_path, epochs: int, kind: str = "coco"):
    path = tmp_path / f"exp-{epochs}.yaml"
    path.write_text(yaml.safe_dump({"name": "exp", "dataset": {"kind": kind}, "detectors": ["atss", "paa"],
                                    "losses": ["rs"], "schedule": {"epochs": epochs}}))
    return load_spec(path)


def row_of(run, ap: float | None, status: str = "done", finished_at: str = "2026-01-01T00:00:00") -> dict:
    return {"run_id": run.run_id, "experiment": run.experiment, "detector": run.detector, "loss": run.loss,
            "seed": run.seed, "dataset": dict(run.dataset), "profile": run.profile, "schedule": dict(run.schedule),
            "loss_modules": [], "status": status, "reason": None if status == "done" else "non-finite loss",
            "metrics": {"bbox_AP": ap} if ap is not None else {}, "curve": [],
            "provenance": {"finished_at": finished_at}}


def edited_experiment(tmp_path):
    """v1 (1 epoch) ran both cells; the spec was edited (2 epochs: new run ids) and rerun, and only ATSS
    has finished again. The v1 rows are newer than nothing: the folder's record decides, not dates."""
    v1, v2 = spec_at(tmp_path, 1), spec_at(tmp_path, 2)
    folder = tmp_path / "results" / "exp"
    for run in v1.runs():
        write_row(folder, row_of(run, 0.10 if run.detector == "atss" else 0.30, finished_at="2026-06-01T00:00:00"))
    record_spec(folder, v1)
    (atss2,) = [r for r in v2.runs() if r.detector == "atss"]
    write_row(folder, row_of(atss2, 0.20, finished_at="2026-05-01T00:00:00"))  # the edited spec's, dated earlier
    record_spec(folder, v2)
    return folder, v1, v2


def test_tables_without_spec_keep_the_recorded_specs_runs_and_never_mix_versions(tmp_path, capsys):
    folder, v1, v2 = edited_experiment(tmp_path)
    assert main(["table", str(folder), "--format", "md"]) == 0
    out = capsys.readouterr().out
    # ATSS from the edited spec; PAA's v1 value (30.0) must not stand beside it: its v2 run has not run
    assert "| ATSS | " in out and "20.0 (1)" in out and "10.0" not in out
    assert "30.0" not in out and "unfinished" in out
    assert "2 row(s) of runs not in the spec as last run" in out and "exp-2.yaml" in out
    # the same with --spec of the edited spec
    assert main(["table", str(folder), "--format", "md", "--spec", str(v2.path)]) == 0
    assert "30.0" not in capsys.readouterr().out


def test_status_shows_rows_of_runs_the_spec_no_longer_has_as_superseded(tmp_path, capsys):
    folder, v1, v2 = edited_experiment(tmp_path)
    states = {s.run_id: s for s in experiment_status(folder)[0]}
    for run in v1.runs():
        assert states[run.run_id].state == "superseded", states[run.run_id]
        assert "not a run of the spec as last run" in states[run.run_id].reason
    (paa2,) = [r for r in v2.runs() if r.detector == "paa"]
    assert states[paa2.run_id].state == "missing"  # in the recorded spec, never submitted: listed without --spec
    rc = main(["status", str(folder)])
    out = capsys.readouterr().out
    assert rc == 0 and "2 superseded" in out and "1 missing" in out and "done" not in out.split("\n")[-3]
    assert "which runs are current: the spec as last run (" in out
    # --spec of the old version: the other way round
    states = {s.run_id: s.state for s in experiment_status(folder, v1)[0]}
    (atss2,) = [r for r in v2.runs() if r.detector == "atss"]
    assert {states[r.run_id] for r in v1.runs()} <= {"done", "stale"} and states[atss2.run_id] == "superseded"


def test_status_exits_1_when_a_current_run_failed_and_not_for_a_superseded_one(tmp_path, capsys):
    folder, v1, v2 = edited_experiment(tmp_path)
    (paa1,) = [r for r in v1.runs() if r.detector == "paa"]
    write_row(folder, row_of(paa1, None, status="failed"))  # an old version's failure: not the user's business now
    assert main(["status", str(folder)]) == 0
    (paa2,) = [r for r in v2.runs() if r.detector == "paa"]
    write_row(folder, row_of(paa2, None, status="failed"))
    assert main(["status", str(folder)]) == 1
    capsys.readouterr()
    assert main(["status", str(folder), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["current_from"].startswith("the spec as last run") and \
        {r["state"] for r in data["runs"] if r["run_id"] == paa2.run_id} == {"failed"}
    (folder / "runs" / "broken.json").write_text("{")  # a corrupt row file is trouble too
    (folder / "runs" / f"{paa2.run_id}.json").unlink()
    assert main(["status", str(folder)]) == 1


def test_a_run_holding_its_lock_shows_though_the_manifest_is_gone(tmp_path, capsys):
    folder, v1, v2 = edited_experiment(tmp_path)
    (paa2,) = [r for r in v2.runs() if r.detector == "paa"]
    lock = RunLock(work_dir(folder, paa2.run_id))
    assert lock.acquire()
    try:
        assert not manifest_path(folder).exists()
        spec_record_path(folder).unlink()  # nothing names the run: only its work folder and lock
        (st,) = [s for s in experiment_status(folder)[0] if s.run_id == paa2.run_id]
        assert st.state == "running" and (st.detector, st.loss, st.seed) == ("paa", "rs", 0)
        assert main(["status", str(folder)]) == 0
        assert "running" in capsys.readouterr().out
    finally:
        lock.release()


def test_harness_run_records_the_whole_spec_whatever_only_ran(tmp_path):
    """Through `harness run` (the debug executor refuses nothing here: every run of the spec is done)."""
    v1 = spec_at(tmp_path, 1, kind="synthetic")
    folder = tmp_path / "results" / "exp"
    for run in v1.runs():
        write_row(folder, row_of(run, 0.1))
    # the spec's fingerprints differ from the hand-made rows' (none): they are stale, left alone, not rerun
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["run", str(v1.path), "--executor", "debug", "--results", str(tmp_path / "results"),
                   "--only", "atss:rs"])
    assert rc == 0
    record = read_spec_record(folder)
    assert set(record["runs"]) == {r.run_id for r in v1.runs()} and record["spec"] == str(v1.path)
    assert record["runs"][v1.runs()[0].run_id]["detector"] == "atss"


def test_an_unreadable_record_falls_back_to_the_rows_dates_with_a_warning(tmp_path, capsys):
    folder, v1, v2 = edited_experiment(tmp_path)
    spec_record_path(folder).write_text("[")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["table", str(folder), "--format", "md"]) == 0
    assert any("spec record" in str(w.message) for w in caught)
    out = capsys.readouterr().out
    assert "Which runs are current was taken from the rows' dates" in out


def test_a_current_run_whose_row_a_cell_leaves_out_for_its_fingerprint_is_not_unfinished(tmp_path, capsys):
    spec_path = tmp_path / "two-seeds.yaml"
    spec_path.write_text(yaml.safe_dump({"name": "exp", "dataset": {"kind": "coco"}, "detectors": ["atss"],
                                         "losses": ["rs"], "seeds": [0, 1]}))
    spec = load_spec(spec_path)
    folder = tmp_path / "results" / "exp"
    for run, digest, when in zip(spec.runs(), ("old", "new"), ("2026-01-01T00:00:00", "2026-02-01T00:00:00")):
        row = row_of(run, 0.10 if digest == "old" else 0.40, finished_at=when)
        write_row(folder, {**row, "fingerprint": {"digest": digest, "components": {}}})
    record_spec(folder, spec)
    assert main(["table", str(folder), "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert "40.0 (1; 1 older left out)" in out and "Runs: 1 done. " in out and "1 unfinished" not in out, out


def test_harness_run_says_what_recording_its_spec_supersedes(tmp_path, capsys):
    """Edited spec, then another spec file of the same name: each `harness run` says which rows it
    supersedes (all rows here are hand-made and stale: left alone, nothing trains)."""
    v1, v2 = spec_at(tmp_path, 1, kind="synthetic"), spec_at(tmp_path, 2, kind="synthetic")
    folder = tmp_path / "results" / "exp"
    for run in v1.runs() + v2.runs():
        write_row(folder, row_of(run, 0.1))

    def run(spec_path) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert main(["run", str(spec_path), "--executor", "debug", "--results", str(tmp_path / "results")]) == 0
        return capsys.readouterr().out

    assert "superseded" not in run(v1.path)  # the first record supersedes nothing
    out = run(v2.path)
    assert "note: another spec file of experiment 'exp'" in out and "2 row(s)" in out  # exp-1.yaml, then exp-2.yaml
    edited = tmp_path / "exp-2.yaml"
    edited.write_text(v1.path.read_text())  # exp-2.yaml edited back to 1 epoch
    out = run(edited)
    assert "note: the spec changed since its last run: 2 row(s)" in out and "superseded" in out
    assert "superseded" not in run(edited)  # nothing more


def test_rows_are_ordered_by_the_instant_they_finished_whatever_the_writers_time_zone():
    from harness.rows import current_rows

    def at(when: str, ap: float) -> dict:
        return {"run_id": f"r{ap}", "dataset": {"kind": "coco"}, "detector": "atss", "loss": "rs", "seed": 0,
                "status": "done", "provenance": {"finished_at": when}}

    # written on a node at UTC+9 at 10:00 local (01:00 UTC), and on one at UTC at 02:00: the latter is later
    tokyo, london = at("2026-12-04T10:00:00+09:00", 1), at("2026-12-04T02:00:00+00:00", 2)
    assert current_rows([tokyo, london])[0] == [london]
    assert current_rows([london, tokyo])[0] == [london]
    assert current_rows([at("not a date", 3), london])[0] == [london]


def test_tables_count_the_rows_other_code_made_as_stale(tmp_path, capsys):
    """`harness table` and `make tables` (benchmark --tables-only): rows the current code would not make
    (here: no fingerprint at all) are counted in the summary line and marked in runs.csv."""
    import pandas as pd

    spec = spec_at(tmp_path, 1, kind="synthetic")
    folder = tmp_path / "results" / "exp"
    for run in spec.runs():
        write_row(folder, row_of(run, 0.1))
    record_spec(folder, spec)
    assert main(["table", str(folder)]) == 0
    assert "2 of the rows are stale: other code, config or versions than this checkout's made them" in \
        capsys.readouterr().out
    runs = pd.read_csv(folder / "tables" / "runs.csv")
    assert set(runs["stale"]) == {"no fingerprint recorded"}
    assert main(["benchmark", str(spec.path), "--tables-only", "--results", str(tmp_path / "results")]) == 0
    assert "2 of the rows are stale" in capsys.readouterr().out


def test_a_cell_keeps_the_current_codes_rows_when_other_code_finished_later(tmp_path, capsys):
    """A teammate on an older checkout finishes a seed after the current code's seeds: the cell keeps the
    current code's fingerprint (the plan's stale answer), not the latest-finished row's."""
    from harness.results.frame import load_experiment

    spec_path = tmp_path / "three.yaml"
    spec_path.write_text(yaml.safe_dump({"name": "exp", "dataset": {"kind": "coco"}, "detectors": ["atss"],
                                         "losses": ["rs"], "seeds": [0, 1, 2]}))
    spec = load_spec(spec_path)
    folder = tmp_path / "results" / "exp"
    runs = spec.runs()
    for run, digest, ap, when in zip(runs, ("cur", "cur", "old"), (0.40, 0.42, 0.10),
                                     ("2026-01-01T00:00:00", "2026-01-02T00:00:00", "2026-03-01T00:00:00")):
        write_row(folder, {**row_of(run, ap, finished_at=when), "fingerprint": {"digest": digest, "components": {}}})
    frame, rows, _ = load_experiment(folder, spec, stale={runs[2].run_id: "harness code changed"})
    assert sorted(r["run_id"] for r in rows) == sorted(r.run_id for r in runs[:2])
    assert frame.attrs["stale"] == 0 and frame.attrs["other_fingerprints"] == 1
    frame, rows, _ = load_experiment(folder, spec)  # stale unknown: the latest-finished row's fingerprint
    assert [r["run_id"] for r in rows] == [runs[2].run_id]
