"""From laptop to cluster without surprises (issue 17): the dry run is the submission, its problems are
refused before anything is submitted, sbatch's refusal stops the submission, a GPU spec never trains
where there is neither SLURM nor a GPU, a site profile from sinfo, the cost, and one-line errors.

SLURM's commands are fakes on PATH (scripts that log their calls), so nothing here needs a cluster.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.launch import local as local_executor
from harness.launch import slurm as slurm_executor

REPO = Path(__file__).resolve().parents[1]


def write_spec(folder: Path, launch: dict, name: str = "site", detectors=("atss", "yolact"), **extra) -> Path:
    data = {"name": name, "dataset": {"kind": "coco"}, "profile": "paper", "detectors": list(detectors),
            "losses": ["rs"], "seeds": [0], "schedule": {"epochs": 12, "batch_per_gpu": 4},
            "launch": {"executor": "slurm", "cluster": "example-a100", "gpus_per_run": 4, "cpus_per_run": 32,
                       "mem_gb": 128, "time_min": 1440, **launch},
            "overrides": {"yolact": {"launch": {"time_min": 2880}}}, **extra}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def fake_slurm(folder: Path, refuse_after: int | None = None) -> Path:
    """sinfo and sbatch on PATH that log each call to ``calls.log``; sbatch refuses every call after the
    first ``refuse_after`` (None: never). An srun too, as every SLURM installation has (submitit looks for
    it before it submits), which is never called here."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    log = folder / "calls.log"
    scripts = {
        "sinfo": f'echo "sinfo $*" >> {log}\necho "gpu*|2-00:00:00|gpu:a100:8(S:0-1)|64|1024000"\n',
        "sbatch": (f'echo "sbatch $*" >> {log}\nn=$(grep -c ^sbatch {log})\n'
                   + (f'if [ "$n" -gt {refuse_after} ]; then echo "sbatch: error: Batch job submission failed: '
                      f'Invalid account or account/partition combination specified" >&2; exit 1; fi\n'
                      if refuse_after is not None else "")
                   + 'echo "Submitted batch job $((1000 + n))"\n'),
        "srun": f'echo "srun $*" >> {log}\nexit 1\n',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def sbatch_calls(folder: Path) -> list[str]:
    log = folder / "calls.log"
    return [line for line in log.read_text().splitlines() if line.startswith("sbatch")] if log.exists() else []


def errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    bin_dir = fake_slurm(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


BAD = [
    ({"cluster": "my-site", "account": "p1"}, "no cluster profile 'my-site'", "available: example-a100, example-v100, local"),
    ({"gpus_per_run": 16, "account": "p1"}, "asks for 16 GPU(s) per node but nodes have 8", "gpus_per_run"),
    ({"time_min": 99999, "account": "p1"}, "99999 min exceeds partition gpu's limit of 2880 min", "time_min"),
    ({}, "account 'CHANGE-ME' is a placeholder", "--account"),
    ({"mem_gb": 2000, "account": "p1"}, "asks for 2000 GB but nodes have 960 GB", "mem_gb"),
    ({"partition": "nosuch", "account": "p1"}, "no partition 'nosuch'", "roles: debug, default, partitions: gpu"),
]


@pytest.mark.parametrize("launch,problem,fix", BAD,
                         ids=["unknown-profile", "gpus", "time", "placeholder", "memory", "partition"])
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "submit"])
def test_what_sbatch_would_refuse_is_one_line_and_exit_2_before_any_submission(slurm, capsys, launch, problem, fix,
                                                                                dry_run):
    # 16 GPUs x 4 images exceed the recipes' total batch: accumulate 1 states the larger batch on purpose,
    # so that the one problem left is the node's GPUs
    extra = {"schedule": {"epochs": 12, "batch_per_gpu": 4, "accumulate": 1}} if launch.get("gpus_per_run") else {}
    spec = write_spec(slurm, launch, **extra)
    argv = ["run", str(spec), "--results", str(slurm / "results")] + (["--dry-run"] if dry_run else [])
    assert main(argv) == 2
    lines = errors(capsys)
    assert lines and all(line.startswith("harness run: error: array ") for line in lines), lines
    assert problem in lines[0] and fix in lines[0], lines
    assert sbatch_calls(slurm) == []
    assert not (slurm / "results" / "site").exists()  # not even a lock file


def test_the_dry_run_prints_the_exact_submission_and_its_cost(slurm, capsys):
    spec = write_spec(slurm, {"account": "p1"})
    assert main(["run", str(spec), "--dry-run", "--results", str(slurm / "results")]) == 0
    out = capsys.readouterr().out
    sbatch = [line.strip() for line in out.splitlines() if line.strip().startswith("sbatch ")]
    assert len(sbatch) == 2  # ATSS at 24 h, YOLACT at 48 h: two arrays
    for option in ("--partition=gpu", "--account=p1", "--gres=gpu:a100:4", "--ntasks-per-node=4", "--cpus-per-task=8",
                   "--mem=128GB", "--array=0-0%1", "--signal=USR2@120", "--constraint=a100_80g"):
        assert option in sbatch[0], (option, sbatch[0])
    assert "--time=1440" in sbatch[0] and "--time=2880" in sbatch[1]
    assert "requeue" in out and "at most 20 times" in out
    # ATSS RS: 12 epochs x ceil(117266 / 16) iterations x 0.44 s (published) x 4 GPUs = 43.0 GPU-h
    assert ("cost: at most 2,016 GPU-h (1 run(s) x 4 GPU(s) x 21 attempts x 24 h limit: the first and up to 20 "
            "requeues; 96 GPU-h an attempt); expected ~43 GPU-h") in out
    assert "published (Bucketed release)" in out
    assert "expected: no step time known" in out  # YOLACT has no published time
    assert ("cost in all: at most 6,048 GPU-h by the time limits (21 attempts of each run; 288 GPU-h an attempt of "
            "each); expected ~43 GPU-h for the 1 of 2 run(s)") in out
    assert sbatch_calls(slurm) == []


def test_the_dry_run_shows_the_submission_where_slurm_is_not_installed(tmp_path, monkeypatch, capsys):
    """A laptop has no srun, sinfo or sbatch: the dry run still prints each array's sbatch options (submitit
    builds its SLURM executor only where srun is on PATH)."""
    path = [d for d in os.environ["PATH"].split(os.pathsep)
            if d and not any((Path(d) / tool).exists() for tool in ("srun", "sinfo", "sbatch"))]
    monkeypatch.setenv("PATH", os.pathsep.join(path))
    spec = write_spec(tmp_path, {"account": "p1"})
    assert main(["run", str(spec), "--dry-run", "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    sbatch = [line.strip() for line in out.splitlines() if line.strip().startswith("sbatch ")]
    assert len(sbatch) == 2 and "--partition=gpu" in sbatch[0] and "--gres=gpu:a100:4" in sbatch[0], out
    assert "no SLURM controller answers here" in out


def cost_lines(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.strip().startswith(("cost:", "cost in all:"))]


def gpu_h(line: str, before: str) -> float:
    return float(line.split(before, 1)[1].split(" GPU-h", 1)[0].replace(",", ""))


@pytest.mark.parametrize("minutes", [120, 10])
def test_the_cost_bound_counts_every_attempt_a_requeuing_run_may_take(slurm, capsys, minutes):
    # ATSS RS expects ~43 GPU-h; a short limit makes it requeue and resume, each attempt booking up to the limit
    from harness.launch.submission import MAX_TIMEOUTS

    spec = write_spec(slurm, {"account": "p1", "time_min": minutes}, detectors=("atss",), overrides={})
    assert main(["run", str(spec), "--dry-run", "--results", str(slurm / "results")]) == 0, capsys.readouterr().err
    line, total = cost_lines(capsys.readouterr().out)
    attempt = 4 * minutes / 60
    bound, expected = gpu_h(line, "at most "), gpu_h(line, "expected ~")
    assert bound == pytest.approx((1 + MAX_TIMEOUTS) * attempt, abs=0.5), line
    assert f"x {1 + MAX_TIMEOUTS} attempts x" in line and f"{attempt:,.0f} GPU-h an attempt" in line
    assert gpu_h(total, "at most ") == bound and gpu_h(total, "expected ~") == expected
    if minutes == 120:  # 6 attempts of 8 GPU-h: the bound is above the expected figure
        assert bound >= expected and "a run needs ~6 attempts of its 120 min limit" in line, line
        assert "the bound above counts one" not in line and "more than the bound" not in total
    else:  # 21 attempts of 40 GPU-min cannot finish 43 GPU-h: said, with why the expected figure is higher
        assert bound < expected
        assert "more than the 21 it may take: it stops unfinished" in line and "raise launch.time_min" in line, line
        assert "more than the bound: some runs need more attempts than they may take" in total, total


def test_cluster_partition_and_account_override_the_spec(slurm, capsys):
    spec = write_spec(slurm, {"time_min": 600}, detectors=("atss",), overrides={})
    argv = ["run", str(spec), "--dry-run", "--cluster", "example-v100", "--partition", "debug", "--account", "lab"]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "--partition=devlab" in out and "--account=lab" in out and "--gpus-per-node=4" in out
    assert "cluster example-v100" in out
    # the debug role's limit applies to the partition it names
    assert main(["run", str(spec), "--dry-run", "--partition", "debug", "--account", "lab"]) == 2
    assert "exceeds partition gpu-dev's limit of 120 min" in errors(capsys)[0]


def test_an_sbatch_refusal_names_the_array_and_submits_nothing_after_it(tmp_path, monkeypatch, capsys):
    bin_dir = fake_slurm(tmp_path, refuse_after=1)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    spec = write_spec(tmp_path, {"account": "p1"}, detectors=("atss", "yolact", "solov2"),
                      overrides={"yolact": {"launch": {"time_min": 2880}}, "solov2": {"launch": {"time_min": 2000}}})
    assert main(["run", str(spec), "--results", str(tmp_path / "results")]) == 2
    lines = errors(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith("harness run: error: sbatch refused array 2 of 3 (1 run(s), partition gpu): "
                               "sbatch: error: Batch job submission failed: Invalid account"), lines[0]
    assert "array(s) 1-1 (1 run(s)) were submitted" in lines[0]
    assert len(sbatch_calls(tmp_path)) == 2  # array 3 was never tried
    manifest = json.loads((tmp_path / "results" / "site" / "manifest.json").read_text())
    assert json.dumps(manifest).count("atss-rs-s0") == 1 and "yolact" not in json.dumps(manifest)
    # the refused array's pickled job is gone: what is left is array 1's (its job id's folder)
    pickles = sorted(p.relative_to(tmp_path / "results" / "site" / "slurm")
                     for p in (tmp_path / "results" / "site" / "slurm").rglob("*.pkl"))
    assert pickles and all(p.parts[0] == "1001" for p in pickles), pickles


def test_an_sbatch_refusal_of_the_first_array_leaves_no_results_folder(tmp_path, monkeypatch, capsys):
    bin_dir = fake_slurm(tmp_path, refuse_after=0)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    spec = write_spec(tmp_path, {"account": "p1"})
    assert main(["run", str(spec), "--results", str(tmp_path / "results")]) == 2
    assert "nothing was submitted" in errors(capsys)[0]
    assert not (tmp_path / "results" / "site").exists()


def test_a_gpu_spec_never_trains_where_there_is_neither_slurm_nor_a_gpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(slurm_executor, "slurm_reachable", lambda: False)
    monkeypatch.setattr(local_executor, "local_gpus", lambda: 0)

    def never(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(local_executor, "spawn_background_pool", never)
    monkeypatch.setattr(local_executor, "LocalPool", never)
    results = tmp_path / "results"
    for extra in ([], ["--wait"], ["--executor", "local"], ["--executor", "debug"]):
        assert main(["run", str(REPO / "experiments" / "coco_1x.yaml"), "--results", str(results), *extra]) == 2
        line, = errors(capsys)
        assert "coco_1x's runs need 4 GPU(s) each" in line and "this machine has 0" in line and "--rehearse" in line
    assert main(["benchmark", str(REPO / "experiments" / "coco_1x.yaml"), "--results", str(results)]) == 2
    assert "need 4 GPU(s)" in errors(capsys)[0]
    assert not results.exists()
    # the dry run shows what a login node would submit, with its cost, and flags the placeholder account
    assert main(["run", str(REPO / "experiments" / "coco_1x.yaml"), "--dry-run", "--results", str(results)]) == 2
    captured = capsys.readouterr()
    assert "executor slurm" in captured.out and "this is what `harness run` submits from a login node" in captured.out
    assert "cost in all: at most 90,720 GPU-h by the time limits (21 attempts of each run; 4,320 GPU-h" in captured.out
    assert "placeholder" in captured.err


def test_data_and_weights_the_runs_lack_here(slurm, tmp_path, monkeypatch, capsys):
    """What a run reads at its start and this machine lacks (a COCO data root, backbone checkpoints): a
    run here is refused before anything starts (one line, exit 2, nothing written); a SLURM submission
    notes each (its jobs read them on the compute nodes) and goes on."""
    monkeypatch.delenv("HARNESS_COCO_ROOT", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty weights cache
    spec = write_spec(slurm, {"account": "p1"}, detectors=("atss",), overrides={})
    results = slurm / "results"
    assert main(["run", str(spec), "--results", str(results)]) == 0, capsys.readouterr().err
    notes = [line for line in capsys.readouterr().out.splitlines() if "not found here" in line]
    assert len(notes) == 2 and "no COCO 2017 data root" in notes[0] and "resnet50" in notes[1], notes
    assert len(sbatch_calls(slurm)) == 1
    cpu = slurm / "cpu.yaml"
    cpu.write_text(yaml.safe_dump({"name": "cpu", "dataset": {"kind": "coco"}, "profile": "tiny", "detectors": ["atss"],
                                   "losses": ["rs"], "launch": {"executor": "local", "gpus_per_run": 0}}))
    for executor in ("local", "debug"):
        assert main(["run", str(cpu), "--executor", executor, "--results", str(results)]) == 2
        line, = errors(capsys)
        assert line.startswith("harness run: error: no COCO 2017 data root") and "HARNESS_COCO_ROOT" in line
    assert not (results / "cpu").exists()
    assert main(["run", str(cpu), "--dry-run", "--results", str(results)]) == 0  # the dry run notes it
    assert "note: not found here, and the runs need it at their start: no COCO 2017" in capsys.readouterr().out


SINFO = """gpu*|2-00:00:00|gpu:a100:8(S:0-1)|64|1024000
gpu|2-00:00:00|gpu:a100:4(S:0)|32|512000
gpu-debug|2:00:00|gpu:a100:8(S:0-1)|64|1024000
cpu|infinite|(null)|128|512000
"""


def test_cluster_init_writes_a_profile_from_sinfo(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sinfo").write_text(f"#!/bin/bash\ncat <<'EOF'\n{SINFO}EOF\n")
    (bin_dir / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "mysite.yaml"
    assert main(["cluster", "init", "mysite", "--out", str(out)]) == 0
    from harness.launch.cluster import load_profile

    profile = load_profile(out)
    assert profile.partitions == {"default": "gpu", "debug": "gpu-debug", "cpu": "cpu"}
    # gpu's nodes: 8 x a100 / 64 CPUs and 4 x a100 / 32 CPUs: what every one has (tests/test_cluster_init_mixed.py)
    assert (profile.gpus_per_node, profile.gpu_type, profile.gres) == (4, "a100", "gpu:{gpu_type}:{gpus}")
    assert (profile.cpus_per_node, profile.cpus_per_gpu, profile.mem_per_gpu_gb) == (32, 8, 125)
    assert profile.time_limits == {"gpu": 2880, "gpu-debug": 120} and profile.time_limit() == 2880
    assert profile.account == "CHANGE-ME" and profile.placeholders()
    assert main(["cluster", "init", "mysite", "--out", str(out)]) == 2  # never overwritten silently
    assert "exists; pass --force" in errors(capsys)[-1]
    # the loopback cluster's sinfo, saved
    saved = tmp_path / "sinfo.txt"
    saved.write_text("debug*|1:00:00|(null)|2|24105\nbatch|infinite|(null)|2|24105\n")
    assert main(["cluster", "init", "lo", "--out", str(tmp_path / "lo.yaml"), "--sinfo", str(saved),
                 "--account", "lab"]) == 0
    lo = load_profile(tmp_path / "lo.yaml")
    assert lo.partitions == {"default": "debug", "batch": "batch"} and lo.gpus_per_node == 0
    assert lo.time_limit("default") == 60 and lo.time_limit("batch") is None and lo.account == "lab"


def test_cluster_init_where_sinfo_fails_is_one_line(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sinfo").write_text("#!/bin/bash\necho 'sinfo: error: Unable to contact slurm controller' >&2\nexit 1\n")
    (bin_dir / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert main(["cluster", "init", "x", "--out", str(tmp_path / "x.yaml")]) == 2
    line, = errors(capsys)
    assert "sinfo failed (sinfo: error: Unable to contact slurm controller)" in line
    assert not (tmp_path / "x.yaml").exists()


BROKEN = "from harness.losses import LossSpec\n\n\ndef f(x):\n    return x\n\n\nvalue = f(1) + undefined_name\n"


@pytest.mark.parametrize("command", [["losses"], ["cells"], ["check-loss", "rs"], ["check-cell", "atss", "rs"]])
@pytest.mark.parametrize("body,where", [(BROKEN, ":8: NameError: name 'undefined_name' is not defined"),
                                        ("def broken(:\n    pass\n", ":1: SyntaxError: "),
                                        ("import nonexistent_pkg_xyz\n",
                                         ":1: ModuleNotFoundError: No module named 'nonexistent_pkg_xyz'")])
def test_a_broken_load_module_is_one_line_with_file_and_line(tmp_path, capsys, command, body, where):
    module = tmp_path / "broken_loss.py"
    module.write_text(body)
    assert main([*command, "--load", str(module)]) == 2
    line, = errors(capsys)
    assert line.startswith(f"harness {command[0]}: error: {module}{where}"), line


def test_a_load_module_by_name_that_imports_a_missing_package_names_its_file_and_line(tmp_path, monkeypatch, capsys):
    """--load and a spec's loss_modules share one code path: the same file:line form for a dotted name."""
    (tmp_path / "broken_by_name.py").write_text("\n\nimport nonexistent_pkg_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["losses", "--load", "broken_by_name"]) == 2
    line, = errors(capsys)
    where = f"{tmp_path / 'broken_by_name.py'}:3: ModuleNotFoundError: No module named 'nonexistent_pkg_xyz'"
    assert line == f"harness losses: error: {where}", line
    from harness.experiments.spec import import_loss_modules

    with pytest.raises(ImportError) as exc:
        import_loss_modules(["broken_by_name"])
    assert str(exc.value) == f"loss module broken_by_name cannot be imported here: {where}"


def test_relative_loss_modules_are_read_from_the_spec_files_folder(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "specs"
    folder.mkdir()
    rel = os.path.relpath(REPO / "examples" / "quality_focal.py", folder)
    spec = folder / "mine.yaml"
    spec.write_text(yaml.safe_dump({"name": "mine", "loss_modules": [rel], "detectors": ["atss"],
                                    "losses": ["focal", "qfl"], "launch": {"executor": "local"}}))
    monkeypatch.chdir(tmp_path)  # not the repository, not the spec's folder
    assert main(["run", str(spec), "--dry-run", "--results", str(tmp_path / "results")]) == 0
    assert "atss-qfl-s0" in capsys.readouterr().out
    spec.write_text(spec.read_text().replace("quality_focal.py", "missing_loss.py"))
    assert main(["run", str(spec), "--dry-run"]) == 2
    line, = errors(capsys)
    tried = (folder / rel.replace("quality_focal.py", "missing_loss.py")).absolute()
    assert f"no file {tried}" in line and "read from the spec file's folder" in line, line


def test_status_of_a_folder_without_results_is_exit_2(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    line, = errors(capsys)
    assert "holds no results" in line
    (tmp_path / "runs").mkdir()
    assert main(["status", str(tmp_path)]) == 0


def test_tables_of_a_spec_that_has_not_run_say_so(tmp_path, capsys):
    assert main(["benchmark", str(REPO / "experiments" / "coco_1x.yaml"), "--tables-only",
                 "--results", str(tmp_path)]) == 2
    line, = errors(capsys)
    spec = REPO / "experiments" / "coco_1x.yaml"
    assert "holds no results of coco_1x yet" in line, line
    # the commands it names look in the same results root (make's targets read results/ only)
    assert f"harness run {spec} --results {tmp_path})" in line, line
    assert line.endswith(f"then harness benchmark {spec} --tables-only --results {tmp_path}"), line
    from harness.commands.benchmark import tables_command

    assert tables_command("experiments/x.yaml", "results") == "make tables EXPERIMENT=experiments/x.yaml"


def test_flags_that_would_be_dropped_are_refused(tmp_path, monkeypatch, capsys):
    """--cluster / --partition / --account where the runs do not go to SLURM, and --timeout without
    --wait, would change nothing: one line, exit 2, nothing started."""
    monkeypatch.setattr(slurm_executor, "slurm_reachable", lambda: False)

    def never(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(local_executor, "spawn_background_pool", never)
    monkeypatch.setattr(local_executor, "LocalPool", never)
    spec, results = REPO / "experiments" / "synthetic.yaml", tmp_path / "results"
    for flags, words in ((["--cluster", "example-a100"], "--cluster says where SLURM jobs go"),
                         (["--executor", "local", "--account", "a", "--partition", "debug"],
                          "--partition, --account say where SLURM jobs go, but these runs go to the local executor:"),
                         (["--timeout", "5"], "--timeout MIN bounds the wait of --wait"),
                         (["--timeout", "-1", "--wait"], "--timeout must be more than 0 minutes")):
        assert main(["run", str(spec), "--results", str(results), *flags]) == 2
        line, = errors(capsys)
        assert words in line, line
    assert not results.exists()
    # with --executor slurm the flags apply: the dry run shows that submission from here
    assert main(["run", str(spec), "--results", str(results), "--dry-run", "--executor", "slurm",
                 "--cluster", "example-a100", "--account", "lab"]) == 0
    assert "--account=lab" in capsys.readouterr().out
