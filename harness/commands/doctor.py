"""Preflight of this node (a login node or a GPU node) for the harness, and for a spec when given.

Checks Python, the pinned packages (torch and its CUDA build, torchvision's kernels, mmcv with its ops,
mmengine, mmdet), the NVIDIA driver against torch's CUDA build, the visible GPUs, NCCL and SLURM
(``sinfo``). With SPEC it also checks what the spec's runs need where they would run: SLURM when it
submits there (every job array as the dry run checks it: the cluster profile, GPUs, CPUs and memory
of a node, the partition's time limit, placeholders; and the partitions against sinfo's), else GPUs
and NCCL on this node; the data roots of COCO / LVIS; the backbone weights. ``--cluster``,
``--partition``, ``--account`` override the spec's launch section as ``harness run`` takes them, and
naming one also checks the submission on a machine without SLURM. Prints one line per check (``ok``, ``note`` or ``PROBLEM``; a
problem says how to fix it) and a summary. Exits 1 when there is a problem (the spec cannot run here),
0 otherwise, 2 when the spec itself does not validate.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

NAME = "doctor"
HELP = "preflight of this node (Python, torch + CUDA + driver, GPUs, NCCL, mmcv / mmdet, SLURM) and of a spec"

MIN_PYTHON = (3, 11)
MIN_TORCH = (2, 4)
# Packages whose version the harness relies on (mmdet 3.3.0's internals, the mmcv its configs need).
EXACT = {"mmcv": "2.1.0", "mmengine": "0.10.7", "mmdet": "3.3.0"}
# Oldest Linux driver per CUDA major version (NVIDIA's CUDA compatibility table; minor versions of one
# major run on its oldest driver).
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
# The torch build variant to suggest for a driver's highest CUDA major version.
VARIANT_FOR_CUDA = {11: "cu118", 12: "cu126", 13: "cu130"}
SUBPROCESS_TIMEOUT = 15


@dataclass
class Finding:
    """One check's outcome: ``status`` is ``ok``, ``note`` (worth knowing, not blocking) or ``problem``."""

    status: str
    check: str
    text: str
    fix: str = ""

    def line(self) -> str:
        label = {"ok": "ok", "note": "note", "problem": "PROBLEM"}[self.status]
        fix = f"; fix: {self.fix}" if self.fix else ""
        return f"{label:<8} {self.check:<9} {self.text}{fix}"


@dataclass
class TorchInfo:
    """What torch reports on this node (``error``: why torch did not import)."""

    version: str | None = None
    cuda: str | None = None  # torch.version.cuda: None for a CPU build
    cuda_available: bool = False
    devices: list[str] = field(default_factory=list)
    nccl: str | None = None  # NCCL version, None when torch has no NCCL
    error: str | None = None


@dataclass
class DriverInfo:
    """What ``nvidia-smi`` reports: the driver version, the highest CUDA it supports, the GPUs."""

    version: str
    cuda: str | None
    gpus: list[str]


# --------------------------------------------------------------------------------------------- probes
# Each probe reads one thing from the node; the tests replace them (or put fake commands on PATH).

def python_version() -> tuple[int, int, int]:
    return tuple(sys.version_info[:3])


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def probe_torch() -> TorchInfo:
    try:
        import torch
    except Exception as exc:  # an ImportError, or a broken CUDA library load
        return TorchInfo(error=f"{type(exc).__name__}: {exc}")
    info = TorchInfo(version=torch.__version__, cuda=torch.version.cuda)
    try:
        info.cuda_available = bool(torch.cuda.is_available())
        if info.cuda_available:
            info.devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as exc:  # a driver too old for the build raises on some versions
        info.error = f"torch.cuda: {type(exc).__name__}: {exc}"
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_nccl_available():
            version = torch.cuda.nccl.version()
            info.nccl = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    except Exception:
        info.nccl = None
    return info


def probe_mmcv_ops() -> str | None:
    """None when ``mmcv._ext`` (mmcv's compiled ops, which ``import mmdet.models`` needs) imports, else why."""
    try:
        import mmcv._ext  # noqa: F401
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def probe_torchvision_ops() -> str | None:
    """None when torchvision's compiled NMS / RoIAlign are there (the cells' kernels), else why."""
    try:
        import torch
        import torchvision  # noqa: F401

        torch.ops.torchvision.nms  # noqa: B018  (raises when torchvision's C++ ops did not load)
        torch.ops.torchvision.roi_align  # noqa: B018
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _command(args: list[str]) -> tuple[int | None, str]:
    """(exit code, stdout + stderr) of a command on PATH; (None, why) when it is missing or hangs."""
    if not shutil.which(args[0]):
        return None, f"{args[0]} not found on PATH"
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, f"{args[0]} did not answer within {SUBPROCESS_TIMEOUT} s"
    except OSError as exc:
        return None, f"{args[0]}: {exc}"
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def probe_driver() -> DriverInfo | None:
    """The NVIDIA driver from ``nvidia-smi``; None when there is none (no nvidia-smi, or it fails)."""
    code, out = _command(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    if code != 0:
        return None
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
    rows = [r for r in rows if len(r) >= 2]
    if not rows:
        return None
    code, header = _command(["nvidia-smi"])
    match = re.search(r"CUDA Version:\s*([0-9.]+)", header) if code == 0 else None
    return DriverInfo(version=rows[0][1], cuda=match.group(1) if match else None, gpus=[r[0] for r in rows])


def probe_slurm() -> tuple[bool, str]:
    """(reachable, detail): whether ``sinfo`` answers, with its partitions or why not."""
    code, out = _command(["sinfo", "-h", "-o", "%R %a %D %G"])
    if code is None:
        return False, out
    if code != 0:
        return False, f"sinfo failed (exit {code}): {out.splitlines()[-1] if out else 'no output'}"
    return True, out


# ---------------------------------------------------------------------------------------------- checks

def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text.split("+")[0])[:3])


def check_python() -> list[Finding]:
    version = python_version()
    text = ".".join(map(str, version)) + f" ({sys.executable})"
    if tuple(version[:2]) < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        return [Finding("problem", "python", f"Python {text} is older than {need}",
                        f"create .venv with python{need} (make setup)")]
    return [Finding("ok", "python", text)]


def check_packages() -> list[Finding]:
    out = []
    versions = {name: package_version(name) for name in ("torch", "torchvision", *EXACT)}
    for name, version in versions.items():
        if version is None:
            out.append(Finding("problem", "packages", f"{name} is not installed", "make setup"))
        elif name in EXACT and version != EXACT[name]:
            out.append(Finding("problem", "packages", f"{name} {version} is installed, the harness needs {EXACT[name]}",
                               "make setup (installs the pinned stack)"))
    torch_version = versions["torch"]
    if torch_version and _version_tuple(torch_version) < MIN_TORCH:
        need = ".".join(map(str, MIN_TORCH))
        out.append(Finding("problem", "packages", f"torch {torch_version} is older than {need}", "make setup"))
    if versions["mmcv"]:
        why = probe_mmcv_ops()
        if why:
            out.append(Finding("problem", "packages", f"mmcv's compiled ops do not load ({why}); mmdet's models import them",
                               "reinstall mmcv 2.1.0 with its ops for this torch (make setup; README, Set-up)"))
    if versions["torchvision"]:
        why = probe_torchvision_ops()
        if why:
            out.append(Finding("problem", "packages", f"torchvision's kernels (NMS, RoIAlign of every cell) do not load ({why})",
                               "install the torchvision built for this torch (make setup)"))
    if not out:
        listed = ", ".join(f"{n} {v}" for n, v in versions.items())
        out.append(Finding("ok", "packages", f"{listed}; NMS and RoIAlign run on torchvision's kernels"))
    return out


def check_allocator() -> list[Finding]:
    """The memory allocator local runs preload (:mod:`harness.run.allocator`): speed only, never results."""
    from harness.run import allocator

    try:
        lib = allocator.library()
    except ValueError as exc:
        return [Finding("problem", "allocator", str(exc), f"unset {allocator.ENV} or set it to system")]
    if lib is not None:
        return [Finding("ok", "allocator", f"local runs preload tcmalloc ({lib})")]
    if os.environ.get(allocator.ENV, "").strip().lower() == "system":
        return [Finding("note", "allocator", f"{allocator.ENV}=system: local runs use the C library's malloc "
                                             "(the same results, 9-18 % slower training steps on CPU)")]
    return [Finding("note", "allocator", "no tcmalloc here: local runs use the C library's malloc (the same results, "
                                         "9-18 % slower training steps on CPU)",
                    "install libtcmalloc-minimal4 (apt) or gperftools; make setup does where it can")]


def check_native() -> list[Finding]:
    """The harness's C kernels (RoIAlign and SGD's update on a CPU, :mod:`harness.detectors.native`): speed only,
    never results. Says whether they are built for this machine, would be built on first use, or cannot be."""
    from harness.detectors import native

    what = "RoIAlign and SGD's update on a CPU"
    if native.disabled():
        return [Finding("note", "kernels", f"{native.ENV_DISABLE}=off: {what} run torchvision's and torch's own "
                                           "kernels (the same results, slower)")]
    cc = native.compiler()
    if cc is None:
        return [Finding("note", "kernels", f"no C compiler (cc or gcc): {what} run torchvision's and torch's own "
                                           "kernels (the same results, several times slower)",
                        "install gcc (apt); make setup does where it can")]
    scope = "" if native.fused_multiply_add() else " (SGD's only on a CPU with AVX2: torch's own update here)"
    paths = [native.library_path(name, cc) for name in native.SOURCES]
    if all(path.is_file() for path in paths):
        return [Finding("ok", "kernels", f"{what} run the harness's C kernels ({', '.join(map(str, paths))}){scope}")]
    return [Finding("ok", "kernels", f"the C kernels of {what} are built with {cc} on first use (into "
                                     f"{paths[0].parent}; python -m harness.detectors.native builds them now){scope}")]


def suggested_variant(driver: DriverInfo) -> str | None:
    """The torch build variant (``cu126``, ...) to install for this driver, from its highest CUDA."""
    if not driver.cuda:
        return None
    major = _version_tuple(driver.cuda)[0]
    candidates = [m for m in VARIANT_FOR_CUDA if m <= major]
    return VARIANT_FOR_CUDA[max(candidates)] if candidates else None


def check_hardware() -> list[Finding]:
    """The processor the runs started here record (:mod:`harness.run.hardware`): rows of the same code from
    other hardware can differ in their last bits, hence in what a run learns."""
    from harness.run import hardware

    return [Finding("ok", "hardware", f"{hardware.cpu()}: each run's row names it (provenance.hardware); "
                                      "other hardware can give the same code other last bits, hence other runs")]


def check_gpu(torch_info: TorchInfo, driver: DriverInfo | None) -> list[Finding]:
    """torch and its CUDA build, the driver, the GPUs torch sees (nothing is required of them here:
    :func:`check_spec` says when the runs need GPUs on this node)."""
    if torch_info.version is None:
        return [Finding("problem", "torch", f"torch does not import ({torch_info.error})", "make setup")]
    out = []
    build = f"CUDA {torch_info.cuda} build" if torch_info.cuda else "CPU-only build"
    gpus = ", ".join(torch_info.devices)
    seen = f"{len(torch_info.devices)} GPU(s) visible: {gpus}" if torch_info.devices else "no GPU visible to torch"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        seen += f" (CUDA_VISIBLE_DEVICES={visible})"
    out.append(Finding("ok", "torch", f"{torch_info.version}, {build}; {seen}"))

    if driver is None:
        out.append(Finding("note", "driver", "no NVIDIA driver here (nvidia-smi not found or failing): fine on a "
                                             "login node; GPU runs need one"))
        return out
    driver_text = f"NVIDIA driver {driver.version}" + (f" (CUDA up to {driver.cuda})" if driver.cuda else "")
    driver_text += f", {len(driver.gpus)} GPU(s): {', '.join(driver.gpus)}"
    variant = suggested_variant(driver)
    fix_variant = (f"HARNESS_TORCH_VARIANT={variant} make setup (a torch build this driver runs)" if variant else
                   "update the NVIDIA driver")
    if torch_info.cuda is None:
        out.append(Finding("problem", "driver", f"{driver_text}, but torch {torch_info.version} is a CPU-only build",
                           fix_variant))
        return out
    cuda_major = _version_tuple(torch_info.cuda)[0]
    need = MIN_DRIVER.get(cuda_major)
    if need and _version_tuple(driver.version) < _version_tuple(need):
        out.append(Finding("problem", "driver", f"torch {torch_info.version} (CUDA {torch_info.cuda}) needs NVIDIA driver "
                                                f">= {need}; this node has {driver.version}", fix_variant))
        return out
    if not torch_info.cuda_available:
        why = f" ({torch_info.error})" if torch_info.error else ""
        out.append(Finding("problem", "driver", f"{driver_text}, but torch cannot use them{why}",
                           "check CUDA_VISIBLE_DEVICES and the job's GPU allocation (--gres / --gpus-per-node)"))
        return out
    out.append(Finding("ok", "driver", driver_text))
    return out


def check_nccl(torch_info: TorchInfo) -> list[Finding]:
    if torch_info.nccl:
        return [Finding("ok", "nccl", f"NCCL {torch_info.nccl}")]
    return [Finding("note", "nccl", "torch has no NCCL here: multi-GPU runs need a CUDA build of torch")]


def check_slurm(reachable: bool, detail: str) -> list[Finding]:
    if reachable:
        partitions = sorted({line.split()[0] for line in detail.splitlines() if line.strip()})
        return [Finding("ok", "slurm", f"sinfo answers; partitions: {', '.join(partitions) or 'none listed'}")]
    return [Finding("note", "slurm", f"no SLURM here ({detail}): runs of this node go to the local executor")]


def _spec_executor(spec, reachable: bool) -> str:
    kind = spec.launch.get("executor", "auto")
    return ("slurm" if reachable else "local") if kind == "auto" else kind


def check_spec(spec, torch_info: TorchInfo, slurm: tuple[bool, str], cluster_named: bool = False) -> list[Finding]:
    """What the spec's runs need: SLURM and a submission its cluster profile accepts when they are submitted
    from here (or when ``cluster_named``: the command line named a cluster, partition or account), GPUs and
    NCCL when they run here; data roots; backbone weights."""
    out = []
    runs = spec.runs()
    reachable, detail = slurm
    executor = _spec_executor(spec, reachable)
    gpus = max((r.launch["gpus_per_run"] for r in runs), default=0)
    world = max((r.world_size for r in runs), default=1)
    where = f"{len(runs)} run(s), executor {executor}, up to {gpus} GPU(s) and {world} process(es) per run"
    out.append(Finding("ok", "spec", f"{spec.path or spec.name}: {where}"))
    in_job = bool(os.environ.get("SLURM_JOB_ID"))  # a compute node, in a job (`srun ... harness doctor SPEC`)
    if executor == "slurm" or cluster_named:
        out += _check_submission(runs, reachable, detail, in_job)
    if executor != "slurm" or in_job:
        out += _check_local_resources(gpus, world, torch_info)
    out += check_data(spec)
    out += check_weights(spec)
    return out


def _check_submission(runs, reachable: bool, detail: str, in_job: bool = False) -> list[Finding]:
    """The dry run's checks of every job array against its cluster profile (unknown profile, GPUs, CPUs or
    memory beyond a node, time over the partition's limit, placeholders), then, where sinfo answers, the
    profiles' partitions against sinfo's."""
    from harness.launch.submission import build_arrays, problems

    out = []
    if not reachable:
        out.append(Finding("problem", "slurm", f"the runs are submitted to SLURM, but {detail}",
                           "run from a login node where sinfo answers, or pass --executor local to harness run"))
    arrays = build_arrays(runs)
    for line in problems(arrays):
        fix = ("write one with `harness cluster init NAME`, or copy slurm/profiles/example-a100.yaml"
               if "no cluster profile" in line else "")  # the other lines say what to change
        out.append(Finding("problem", "cluster", line, fix))
    if not reachable:
        return out
    known = {line.split()[0].rstrip("*") for line in detail.splitlines() if line.strip()}
    loaded = {}
    for array in arrays:
        if array.profile is not None and not array.problems:  # an array with problems has its lines above
            loaded.setdefault(array.cluster, (array.profile, set()))[1].add(array.params["slurm_partition"])
    for name, (profile, wanted) in sorted(loaded.items()):
        missing = sorted(wanted - known) if known else []
        if missing:
            out.append(Finding("problem", "cluster", f"profile {name}: partition(s) {', '.join(missing)} not in sinfo's "
                                                     f"list ({', '.join(sorted(known))})",
                               f"set partitions in {profile.source or name}"))
        else:
            out.append(Finding("ok", "cluster", f"profile {name}: partition(s) {', '.join(sorted(wanted))}"))
    if not in_job:  # in a job, this node's GPUs are checked against the runs' next
        out.append(Finding("note", "gpus", "the runs' GPUs, driver and NCCL are the compute nodes': check one with "
                                           "`srun --gres=gpu:N .venv/bin/harness doctor SPEC` (N: the runs' GPUs)"))
    return out


def _check_local_resources(gpus: int, world: int, torch_info: TorchInfo) -> list[Finding]:
    if gpus == 0:
        return [Finding("ok", "gpus", "the runs train on CPU")]
    have = len(torch_info.devices)
    if have < gpus:
        return [Finding("problem", "gpus", f"the runs need {gpus} GPU(s) on this node, torch sees {have}",
                        "run on a GPU node (or a job with that many GPUs), or submit through SLURM from a login node")]
    out = [Finding("ok", "gpus", f"{gpus} of {have} GPU(s) per run")]
    if world > 1 and not torch_info.nccl:
        out.append(Finding("problem", "nccl", f"runs of {world} GPU processes need NCCL, torch has none",
                           "install a CUDA build of torch (make setup)"))
    return out


def check_data(spec) -> list[Finding]:
    from harness.data.real import DataRootError, real_paths

    from harness.data.coco_format import check_dataset

    out = []
    for dataset in spec.datasets:
        kind = dataset["kind"]
        if kind == "coco_format":
            warnings: list[str] = []
            problems = check_dataset(dataset, spec.path, warnings)
            out += [Finding("problem", "data", line) for line in problems]  # each line names its fix
            if not problems:
                out.append(Finding("ok", "data", f"{dataset['name']}: {dataset['train']['ann']}, {dataset['val']['ann']}"))
            out += [Finding("note", "data", line) for line in warnings]  # val images that train also lists
            continue
        if kind not in ("coco", "lvis"):
            out.append(Finding("ok", "data", f"{kind}: generated on first use (under data/)"))
            continue
        try:
            paths = real_paths(kind, dataset.get("root"))
        except DataRootError as exc:  # its message names the path expected
            env = "HARNESS_COCO_ROOT" if kind == "coco" else "HARNESS_LVIS_ROOT"
            fix = "" if env in str(exc) else f"point dataset.root or {env} at a complete {kind} data root"
            out.append(Finding("problem", "data", str(exc), fix))
            continue
        out.append(Finding("ok", "data", f"{kind}: {paths.root}"))
    return out


def check_weights(spec) -> list[Finding]:
    try:
        from harness.detectors.weights import missing_weights
    except ImportError:
        return [Finding("note", "weights", "backbone weights not checked: harness.detectors.weights is not in this "
                                           "version of the harness")]
    missing = list(missing_weights(spec))
    if missing:
        return [Finding("problem", "weights", line) for line in missing]
    return [Finding("ok", "weights", "every backbone checkpoint the runs start from is here")]


def diagnose(spec=None, cluster_named: bool = False) -> list[Finding]:
    """Every check, in order (the spec's last); ``cluster_named``: see :func:`check_spec`."""
    torch_info = probe_torch()
    driver = probe_driver()
    slurm = probe_slurm()
    findings = check_python() + check_packages() + check_allocator() + check_native() + check_hardware()
    findings += check_gpu(torch_info, driver)
    findings += check_nccl(torch_info)
    findings += check_slurm(*slurm)
    if spec is not None:
        findings += check_spec(spec, torch_info, slurm, cluster_named)
    return findings


# -------------------------------------------------------------------------------------------- command

def add_arguments(parser) -> None:
    parser.add_argument("spec", nargs="?", help="an experiment spec (experiments/*.yaml): also check what its runs need")
    parser.add_argument("--cluster", default=None, metavar="NAME",
                        help="with SPEC: cluster profile (slurm/profiles/NAME.yaml or a path) instead of the spec's "
                             "launch.cluster, as `harness run --cluster` would use")
    parser.add_argument("--partition", default=None, metavar="NAME",
                        help="with SPEC: partition (a role of the profile or a partition name) for every run")
    parser.add_argument("--account", default=None, metavar="NAME", help="with SPEC: SLURM account instead of the profile's")


def run(args) -> int:
    from harness.commands import UsageError

    spec = None
    if args.spec:
        from harness.experiments.spec import SpecError, load_spec

        if not Path(args.spec).is_file():
            raise UsageError(f"no spec file {args.spec} (see experiments/*.yaml)")
        try:
            spec = load_spec(args.spec)
        except SpecError as exc:
            raise UsageError(str(exc)) from None
        from harness.launch.submission import override_launch

        spec = override_launch(spec, cluster=args.cluster, partition=args.partition, account=args.account)
    elif args.cluster or args.partition or args.account:
        raise UsageError("--cluster, --partition and --account check a spec's runs: give the spec too "
                         "(harness doctor SPEC --cluster NAME)")
    findings = diagnose(spec, cluster_named=bool(args.cluster or args.partition or args.account))
    for finding in findings:
        print(finding.line())
    problems = [f for f in findings if f.status == "problem"]
    host = os.uname().nodename
    subject = f"{args.spec} cannot run" if args.spec else "the harness cannot run"
    if problems:
        print(f"{len(problems)} problem(s): {subject} on {host} as it is")
        return 1
    notes = sum(f.status == "note" for f in findings)
    ready = f"{args.spec} can run" if args.spec else "the harness can run"
    print(f"no problems ({notes} note(s)): {ready} on {host}")
    return 0
