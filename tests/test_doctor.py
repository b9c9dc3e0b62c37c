"""`harness doctor`: each check against a faked node (fake nvidia-smi / sinfo on PATH, torch and package
probes replaced), and the exit codes."""

from __future__ import annotations

import sys
import textwrap
import types

import pytest

from harness.cli import main
from harness.commands import doctor
from harness.commands.doctor import TorchInfo

NVIDIA_SMI = """#!/bin/sh
case "$1" in
  --query-gpu=*) {rows} ;;
  *) echo "| NVIDIA-SMI {driver}   Driver Version: {driver}   CUDA Version: {cuda}  |" ;;
esac
"""


@pytest.fixture
def node(tmp_path, monkeypatch):
    """A fake node: PATH holds only a folder of fake commands; torch's answers are set per test."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)  # a login node unless a test says otherwise
    monkeypatch.delenv("HARNESS_COCO_ROOT", raising=False)
    state = types.SimpleNamespace(bin=bin_dir, torch=TorchInfo(version="2.14.1+cu130", cuda="13.0"))
    monkeypatch.setattr(doctor, "probe_torch", lambda: state.torch)
    # no weights module: the check is skipped with a note (tests of it install a fake one)
    monkeypatch.setitem(sys.modules, "harness.detectors.weights", None)

    def command(name: str, script: str) -> None:
        path = bin_dir / name
        path.write_text(script)
        path.chmod(0o755)

    state.command = command

    def gpus(driver: str, cuda: str, names: list[str]) -> None:
        rows = "; ".join(f'echo "{n}, {driver}"' for n in names)
        command("nvidia-smi", NVIDIA_SMI.format(rows=rows, driver=driver, cuda=cuda))

    state.gpus = gpus
    return state


def _doctor(capsys, *args) -> tuple[int, list[str]]:
    code = main(["doctor", *map(str, args)])
    out = capsys.readouterr().out.splitlines()
    return code, out


def _lines(out: list[str], status: str, check: str) -> list[str]:
    return [line for line in out if line.split()[:2] == [status, check]]


def test_a_plain_cpu_node_has_no_problems(node, capsys):
    code, out = _doctor(capsys)
    assert code == 0, out
    assert _lines(out, "note", "driver") and _lines(out, "note", "slurm")
    assert out[-1].startswith("no problems")
    assert _lines(out, "ok", "packages")  # the real stack of this .venv
    from harness.run import hardware

    (line,) = _lines(out, "ok", "hardware")  # the processor this node's rows will name
    assert f"{hardware.cpu()}: each run's row names it" in line


def test_a_driver_too_old_for_torchs_cuda_names_the_variant_to_install(node, capsys):
    node.gpus("550.54.15", "12.4", ["NVIDIA A100-SXM4-80GB"] * 2)
    code, out = _doctor(capsys)
    assert code == 1
    (line,) = _lines(out, "PROBLEM", "driver")
    assert "needs NVIDIA driver >= 580.65.06" in line and "550.54.15" in line
    assert "fix: HARNESS_TORCH_VARIANT=cu126 make setup" in line
    assert "problem(s)" in out[-1]


def test_a_recent_driver_with_visible_gpus_is_fine(node, capsys):
    node.gpus("580.82.07", "13.0", ["NVIDIA H100 80GB HBM3"] * 4)
    node.torch = TorchInfo(version="2.14.1+cu130", cuda="13.0", cuda_available=True,
                           devices=["NVIDIA H100 80GB HBM3"] * 4, nccl="2.27.3")
    code, out = _doctor(capsys)
    assert code == 0, out
    (line,) = _lines(out, "ok", "driver")
    assert "580.82.07" in line and "4 GPU(s)" in line
    assert _lines(out, "ok", "nccl")[0].endswith("NCCL 2.27.3")
    assert "4 GPU(s) visible" in _lines(out, "ok", "torch")[0]


def test_gpus_the_driver_lists_but_torch_cannot_use(node, capsys, monkeypatch):
    node.gpus("580.82.07", "13.0", ["NVIDIA H100"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    code, out = _doctor(capsys)
    assert code == 1
    (line,) = _lines(out, "PROBLEM", "driver")
    assert "torch cannot use them" in line and "fix: check CUDA_VISIBLE_DEVICES" in line
    assert "(CUDA_VISIBLE_DEVICES=)" in _lines(out, "ok", "torch")[0]


def test_a_cpu_only_torch_on_a_gpu_node(node, capsys):
    node.gpus("535.104.05", "12.2", ["Tesla V100-SXM2-32GB"])
    node.torch = TorchInfo(version="2.14.1+cpu", cuda=None)
    code, out = _doctor(capsys)
    assert code == 1
    (line,) = _lines(out, "PROBLEM", "driver")
    assert "CPU-only build" in line and "HARNESS_TORCH_VARIANT=cu126" in line


def test_torch_that_does_not_import(node, capsys):
    node.torch = TorchInfo(error="ImportError: libcudart.so.13: cannot open shared object file")
    code, out = _doctor(capsys)
    assert code == 1
    assert "libcudart" in _lines(out, "PROBLEM", "torch")[0]


def test_wrong_package_versions_and_missing_ops(node, capsys, monkeypatch):
    real = doctor.package_version
    monkeypatch.setattr(doctor, "package_version", lambda name: {"mmdet": "3.2.0", "mmengine": None}.get(name, real(name)))
    monkeypatch.setattr(doctor, "probe_mmcv_ops", lambda: "ImportError: undefined symbol _ZN3c10")
    code, out = _doctor(capsys)
    assert code == 1
    problems = _lines(out, "PROBLEM", "packages")
    assert any("mmdet 3.2.0 is installed, the harness needs 3.3.0" in p for p in problems)
    assert any("mmengine is not installed" in p for p in problems)
    assert any("mmcv's compiled ops do not load" in p and "fix:" in p for p in problems)


def test_an_old_python(node, capsys, monkeypatch):
    monkeypatch.setattr(doctor, "python_version", lambda: (3, 10, 12))
    code, out = _doctor(capsys)
    assert code == 1
    assert "older than 3.11" in _lines(out, "PROBLEM", "python")[0]


# -------------------------------------------------------------------------------------------- specs

def _spec(tmp_path, launch: str, dataset: str = "{kind: synthetic}") -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: doctor_test
        dataset: {dataset}
        profile: tiny
        detectors: [atss, faster_rcnn]
        losses: [focal, rs]
        schedule: {{accumulate: 1}}  # the tiny recipe's total batch is 4: several GPUs train a larger one on purpose
        launch: {launch}
        """))
    return str(path)


def _sinfo(node, partitions: list[str], code: int = 0) -> None:
    lines = "; ".join(f'echo "{p} up 4 gpu:a100:8"' for p in partitions)
    node.command("sinfo", f"#!/bin/sh\n{lines}\nexit {code}\n")


def test_a_login_node_that_submits_to_slurm(node, tmp_path, capsys):
    _sinfo(node, ["gpu", "gpu-dev"])
    spec = _spec(tmp_path, "{executor: auto, cluster: example-a100, account: proj, gpus_per_run: 4, cpus_per_run: 32}")
    code, out = _doctor(capsys, spec)
    assert code == 0, out
    assert "executor slurm" in _lines(out, "ok", "spec")[0]
    assert "partitions: gpu, gpu-dev" in _lines(out, "ok", "slurm")[0]
    assert "profile example-a100: partition(s) gpu" in _lines(out, "ok", "cluster")[0]
    assert "srun" in _lines(out, "note", "gpus")[0]  # the GPUs are the compute nodes'
    assert _lines(out, "note", "kernels")  # no C compiler on the fake node's PATH: a note, not a problem
    assert out[-1] == f"no problems (5 note(s)): {spec} can run on " + out[-1].split(" on ")[-1]


def test_a_profile_partition_sinfo_does_not_list(node, tmp_path, capsys):
    _sinfo(node, ["batch"])
    spec = _spec(tmp_path, "{executor: slurm, cluster: example-a100, account: proj, gpus_per_run: 1}")
    code, out = _doctor(capsys, spec)
    assert code == 1
    line = _lines(out, "PROBLEM", "cluster")[0]
    assert "partition(s) gpu not in sinfo's list (batch)" in line and "example-a100.yaml" in line


def test_slurm_spec_where_sinfo_fails(node, tmp_path, capsys):
    node.command("sinfo", "#!/bin/sh\necho 'slurm_load_partitions: Unable to contact slurm controller' >&2\nexit 1\n")
    spec = _spec(tmp_path, "{executor: slurm, cluster: example-a100, gpus_per_run: 1}")
    code, out = _doctor(capsys, spec)
    assert code == 1
    line = _lines(out, "PROBLEM", "slurm")[0]
    assert "Unable to contact slurm controller" in line and "fix:" in line
    assert _lines(out, "note", "slurm")  # the node-level check only notes it


def test_a_gpu_node_running_a_spec_locally(node, tmp_path, capsys):
    node.gpus("580.82.07", "13.0", ["NVIDIA A100"] * 2)
    node.torch = TorchInfo(version="2.14.1+cu130", cuda="13.0", cuda_available=True, devices=["NVIDIA A100"],
                           nccl=None)
    spec = _spec(tmp_path, "{executor: local, gpus_per_run: 2, cpus_per_run: 8}")
    code, out = _doctor(capsys, spec)
    assert code == 1
    assert "need 2 GPU(s) on this node, torch sees 1" in _lines(out, "PROBLEM", "gpus")[0]
    node.torch.devices = ["NVIDIA A100"] * 2
    code, out = _doctor(capsys, spec)
    assert code == 1
    assert "need NCCL" in _lines(out, "PROBLEM", "nccl")[0]
    node.torch.nccl = "2.27.3"
    code, out = _doctor(capsys, spec)
    assert code == 0, out
    assert _lines(out, "ok", "gpus")


def _coco_root(root):
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / "annotations" / f"instances_{split}2017.json").write_text("{}")
        (root / f"{split}2017").mkdir()
    return root


def test_data_roots(node, tmp_path, capsys, monkeypatch):
    spec = _spec(tmp_path, "{executor: local}", dataset="{kind: coco}")
    code, out = _doctor(capsys, spec)
    assert code == 1
    assert "HARNESS_COCO_ROOT" in _lines(out, "PROBLEM", "data")[0]
    root = _coco_root(tmp_path / "coco")
    monkeypatch.setenv("HARNESS_COCO_ROOT", str(root))
    code, out = _doctor(capsys, spec)
    assert code == 0, out
    assert str(root) in _lines(out, "ok", "data")[0]
    (root / "val2017").rmdir()
    code, out = _doctor(capsys, spec)
    assert code == 1
    line = _lines(out, "PROBLEM", "data")[0]
    assert "val image folder not found" in line and "fix: point dataset.root or HARNESS_COCO_ROOT" in line


def test_backbone_weights_when_the_weights_module_exists(node, tmp_path, capsys, monkeypatch):
    spec = _spec(tmp_path, "{executor: local}")
    code, out = _doctor(capsys, spec)
    assert code == 0 and "not checked" in _lines(out, "note", "weights")[0]
    fake = types.ModuleType("harness.detectors.weights")
    seen = []

    def missing_weights(spec):
        seen.append(spec.name)
        return ["torchvision://resnet50 is not in torch's cache: run `harness weights SPEC` where there is internet"]

    fake.missing_weights = missing_weights
    monkeypatch.setitem(sys.modules, "harness.detectors.weights", fake)
    code, out = _doctor(capsys, spec)
    assert code == 1 and seen == ["doctor_test"]
    assert "resnet50" in _lines(out, "PROBLEM", "weights")[0]
    fake.missing_weights = lambda spec: []
    code, out = _doctor(capsys, spec)
    assert code == 0 and _lines(out, "ok", "weights")


def test_usage_errors(node, tmp_path, capsys):
    assert main(["doctor", str(tmp_path / "missing.yaml")]) == 2
    assert "no spec file" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("detectors: [atss]\nlosses: [rs]\nlaunch: {gpus: 2}\n")
    assert main(["doctor", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown key 'gpus'" in err


def test_cluster_partition_and_account_override_the_specs_launch(node, tmp_path, capsys):
    """`doctor SPEC --cluster NAME --partition P` checks the profile and partition `run` would use."""
    _sinfo(node, ["gpu", "gpu-dev"])
    spec = _spec(tmp_path, "{executor: slurm, cluster: example-a100, account: proj, gpus_per_run: 1}")
    code, out = _doctor(capsys, spec, "--cluster", "no-such-site")
    assert code == 1
    assert "no-such-site" in _lines(out, "PROBLEM", "cluster")[0]
    code, out = _doctor(capsys, spec, "--partition", "debug")  # example-a100's debug role is gpu-dev
    assert code == 0, out
    assert "profile example-a100: partition(s) gpu-dev" in _lines(out, "ok", "cluster")[0]


@pytest.mark.parametrize("sinfo_answers", [True, False])
def test_what_the_dry_run_refuses_is_a_problem(node, tmp_path, capsys, sinfo_answers):
    """doctor runs the dry run's checks of the submission: a placeholder account, more GPUs than a node has,
    a time over the partition's limit, an unknown profile; each one PROBLEM line, exit 1 (where sinfo
    answers, and on a machine without SLURM when the command line names the cluster)."""
    if sinfo_answers:
        _sinfo(node, ["gpu", "gpu-dev"])
    cases = [
        ("{executor: auto, cluster: example-a100, gpus_per_run: 4}", "account 'CHANGE-ME' is a placeholder"),
        ("{executor: auto, cluster: example-a100, account: proj, gpus_per_run: 16}",
         "asks for 16 GPU(s) per node but nodes have 8"),
        ("{executor: auto, cluster: example-a100, account: proj, gpus_per_run: 4, time_min: 99999}",
         "99999 min exceeds partition gpu's limit of 2880 min"),
    ]
    for launch, expected in cases:
        spec = _spec(tmp_path, launch)
        code, out = _doctor(capsys, spec, *([] if sinfo_answers else ["--cluster", "example-a100"]))
        assert code == 1, out
        assert any(expected in line for line in _lines(out, "PROBLEM", "cluster")), out
        assert out[-1].startswith("1 problem(s)" if sinfo_answers else "3 problem(s)"), out  # + no sinfo, no GPUs
    code, out = _doctor(capsys, _spec(tmp_path, "{executor: auto, cluster: example-a100, gpus_per_run: 4}"),
                        "--cluster", "my-site")
    assert code == 1
    line = _lines(out, "PROBLEM", "cluster")[0]
    assert "no cluster profile 'my-site'" in line and "harness cluster init" in line


def test_an_array_with_problems_is_not_also_ok(node, tmp_path, capsys):
    _sinfo(node, ["gpu", "gpu-dev"])
    for flags, problem in ([], "account 'CHANGE-ME' is a placeholder"), (["--partition", "nosuch"], "no partition 'nosuch'"):
        code, out = _doctor(capsys, _spec(tmp_path, "{executor: auto, cluster: example-a100, gpus_per_run: 4}"), *flags)
        assert code == 1
        assert problem in _lines(out, "PROBLEM", "cluster")[0]
        assert not _lines(out, "ok", "cluster"), out


def test_inside_a_slurm_job_the_nodes_gpus_are_checked_against_the_runs(node, tmp_path, capsys, monkeypatch):
    """`srun --gres=gpu:4 harness doctor SPEC` on a compute node: sinfo answers there too, but the node's GPUs
    are the runs' (a login node only gets the note to check one)."""
    _sinfo(node, ["gpu", "gpu-dev"])
    spec = _spec(tmp_path, "{executor: auto, cluster: example-a100, account: proj, gpus_per_run: 4, cpus_per_run: 32}")
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    code, out = _doctor(capsys, spec)
    assert code == 1
    assert "need 4 GPU(s) on this node, torch sees 0" in _lines(out, "PROBLEM", "gpus")[0]
    assert not _lines(out, "note", "gpus")
    node.gpus("580.82.07", "13.0", ["NVIDIA A100"] * 4)
    node.torch = TorchInfo(version="2.14.1+cu130", cuda="13.0", cuda_available=True, devices=["NVIDIA A100"] * 4,
                           nccl="2.27.3")
    code, out = _doctor(capsys, spec)
    assert code == 0, out
    assert "4 of 4 GPU(s) per run" in _lines(out, "ok", "gpus")[0]


def test_cluster_without_a_spec_is_a_usage_error(node, capsys):
    from harness.cli import main

    assert main(["doctor", "--cluster", "example-a100"]) == 2
    err = capsys.readouterr().err
    assert "give the spec too" in err and len(err.strip().splitlines()) == 1


def test_the_c_kernels_line(node, tmp_path, capsys, monkeypatch):
    """Without a compiler: a note (torch's and torchvision's kernels run, same results); with one: built or built on first
    use; switched off: a note. Never a problem: the kernels change speed, not results."""
    from harness.detectors import native

    monkeypatch.setenv(native.ENV_CACHE, str(tmp_path / "native"))
    monkeypatch.delenv("CC", raising=False)
    code, out = _doctor(capsys)
    assert code == 0 and _lines(out, "note", "kernels") and "no C compiler" in _lines(out, "note", "kernels")[0]
    node.command("cc", "#!/bin/sh\nexit 1\n")
    code, out = _doctor(capsys)
    assert code == 0 and "built with" in _lines(out, "ok", "kernels")[0] and "on first use" in _lines(out, "ok", "kernels")[0]
    built = [native.library_path(name, str(node.bin / "cc")) for name in ("roi_align", "sgd")]
    built[0].parent.mkdir(parents=True)
    built[0].write_bytes(b"")
    code, out = _doctor(capsys)
    assert "on first use" in _lines(out, "ok", "kernels")[0]  # one of the two still to build
    built[1].write_bytes(b"")
    code, out = _doctor(capsys)
    assert f"run the harness's C kernels ({built[0]}, {built[1]})" in _lines(out, "ok", "kernels")[0]
    monkeypatch.setenv(native.ENV_DISABLE, "off")
    code, out = _doctor(capsys)
    assert "HARNESS_NATIVE=off" in _lines(out, "note", "kernels")[0]
