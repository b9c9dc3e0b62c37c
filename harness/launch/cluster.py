"""Cluster profiles (``slurm/profiles/*.yaml``) and the loopback SLURM test cluster (``slurm/up.sh``).

A *profile* describes one site as data: its partitions, GPU type and ``--gres`` form, account, QOS,
constraint, default wall time, CPUs and memory per GPU. :func:`load_profile` reads and validates one;
:meth:`ClusterProfile.executor_parameters` turns it into the keyword arguments of submitit's
``AutoExecutor.update_parameters`` for a job of a given size.

The *local cluster* is a real single-node SLURM (slurmctld, slurmd, slurmdbd with MariaDB, munged) on
127.0.0.1, installed and started by ``slurm/up.sh`` with all its state under ``$HARNESS_SLURM_DIR``
(default ``/tmp/harness-slurm``). :func:`ensure_local_cluster` starts it (installing SLURM with apt when
missing) and returns the environment variables that point SLURM's commands at it; it raises
:class:`ClusterUnavailable` with the reason when that is impossible. See docs/slurm.md.

Only the standard library is imported at module level (PyYAML when a profile is read).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

REPO_ROOT = Path(__file__).resolve().parents[2]
SLURM_SCRIPTS = REPO_ROOT / "slurm"
PROFILES_DIR = SLURM_SCRIPTS / "profiles"
DEFAULT_CLUSTER_DIR = "/tmp/harness-slurm"

__all__ = [
    "ClusterProfile",
    "ClusterUnavailable",
    "ProfileError",
    "available_profiles",
    "is_placeholder",
    "parse_sinfo",
    "profile_from_sinfo",
    "profile_text_from_sinfo",
    "read_sinfo",
    "cluster_dir",
    "ensure_local_cluster",
    "load_profile",
    "local_cluster_env",
]


class ProfileError(ValueError):
    """A profile that does not exist or does not validate; the message says which file and why."""


class ClusterUnavailable(RuntimeError):
    """The local SLURM cluster cannot be installed or started here; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------------------------------
# Profiles


@dataclasses.dataclass(frozen=True)
class ClusterProfile:
    """One site's SLURM settings (a ``slurm/profiles/<name>.yaml`` file); every field is a YAML key.

    partitions: role → partition name; ``default`` is required (e.g. ``{default: gpu, debug: dev}``).
    account, qos, constraint: passed as ``--account``, ``--qos``, ``--constraint`` when set.
    gpu_type: the site's GPU model (``a100``), available as ``{gpu_type}`` in ``gres``.
    gres: ``--gres`` template for a job with ``{gpus}`` GPUs per node, e.g. ``gpu:{gpu_type}:{gpus}``;
        when None, GPUs are requested with ``--gpus-per-node``.
    gpus_per_node: GPUs on one node, the most a job may ask for (0: a CPU-only cluster).
    cpus_per_gpu, mem_per_gpu_gb: CPUs and memory a GPU job gets per GPU (None: the site's default).
    cpus_per_task, mem_gb: what a CPU-only job gets (``mem_gb`` None: the site's default).
    cpus_per_node, mem_per_node_gb: what one node has (None: ``cpus_per_gpu`` / ``mem_per_gpu_gb`` ×
        ``gpus_per_node`` on a GPU cluster, else unknown); a job asking for more is refused before submission.
    time_min: default wall time in minutes; max_time_min: the partitions' limit (None: no limit known).
    time_limits: partition name → its own limit in minutes where it differs (``{gpu-dev: 120}``).
    array_parallelism: most tasks of one job array running at once.
    setup: shell lines run in the job script before the job (``module load cuda/12.1``).
    additional_parameters: more ``#SBATCH`` options, as submitit's ``slurm_additional_parameters``.
    """

    name: str
    partitions: Mapping[str, str]
    description: str = ""
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpu_type: str | None = None
    gres: str | None = None
    gpus_per_node: int = 0
    cpus_per_gpu: int | None = None
    mem_per_gpu_gb: float | None = None
    cpus_per_task: int = 1
    mem_gb: float | None = None
    cpus_per_node: int | None = None
    mem_per_node_gb: float | None = None
    time_min: int = 60
    max_time_min: int | None = None
    time_limits: Mapping[str, int] = dataclasses.field(default_factory=dict)
    array_parallelism: int = 64
    setup: tuple[str, ...] = ()
    additional_parameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    source: str = dataclasses.field(default="", compare=False)  # the file it came from (not a YAML key)

    @property
    def partition(self) -> str:
        """The default partition."""
        return self.partitions["default"]

    def as_dict(self) -> dict[str, Any]:
        """The profile as plain data (the YAML keys), e.g. to save next to a run."""
        data = dataclasses.asdict(self)
        data.pop("source")
        data["partitions"] = dict(self.partitions)
        data["time_limits"] = dict(self.time_limits)
        data["setup"] = list(self.setup)
        data["additional_parameters"] = dict(self.additional_parameters)
        return data

    def partition_name(self, partition: str | None = None) -> str:
        """The SLURM partition of a role (``default``, ``debug``, ...) or a partition name of the profile;
        :class:`ProfileError` when it is neither."""
        partition = partition or "default"
        if partition in self.partitions:
            return self.partitions[partition]
        if partition in self.partitions.values():
            return partition
        raise ProfileError(
            f"profile {self.name!r}: no partition {partition!r}; roles: {_listing(self.partitions)}, "
            f"partitions: {_listing(self.partitions.values())}"
        )

    def time_limit(self, partition: str | None = None) -> int | None:
        """The wall-time limit in minutes of a partition (role or name): its own, else ``max_time_min``."""
        return self.time_limits.get(self.partition_name(partition), self.max_time_min)

    def node_cpus(self) -> int | None:
        """CPUs of one node: ``cpus_per_node``, else ``cpus_per_gpu`` × ``gpus_per_node`` (None: unknown)."""
        if self.cpus_per_node is not None:
            return self.cpus_per_node
        return self.cpus_per_gpu * self.gpus_per_node if self.cpus_per_gpu and self.gpus_per_node else None

    def node_mem_gb(self) -> float | None:
        """Memory of one node: ``mem_per_node_gb``, else ``mem_per_gpu_gb`` × ``gpus_per_node`` (None: unknown)."""
        if self.mem_per_node_gb is not None:
            return self.mem_per_node_gb
        return self.mem_per_gpu_gb * self.gpus_per_node if self.mem_per_gpu_gb and self.gpus_per_node else None

    def placeholders(self) -> list[str]:
        """Values still an example's placeholders (``CHANGE-ME``, ``<your-account>``): one line each."""
        where = self.source or self.name
        out = []
        for key in ("account", "qos", "constraint", "gpu_type"):
            value = getattr(self, key)
            if isinstance(value, str) and is_placeholder(value):
                flag = " or pass --account NAME" if key == "account" else ""
                out.append(f"profile {self.name!r}: {key} {value!r} is a placeholder; set your site's in {where}{flag}")
        for role, name in self.partitions.items():
            if is_placeholder(name):
                out.append(f"profile {self.name!r}: partition {role} {name!r} is a placeholder; set your site's in "
                           f"{where} or pass --partition NAME")
        return out

    def problems(self, gpus: int = 0, minutes: int | None = None, partition: str | None = None,
                 cpus: int | None = None, mem_gb: float | None = None) -> list[str]:
        """What sbatch would refuse in a one-node job of ``gpus`` GPUs, ``cpus`` CPUs and ``mem_gb`` GB for
        ``minutes`` on ``partition`` (role or name), then the placeholders: one line each (empty: none)."""
        try:
            name = self.partition_name(partition)
        except ProfileError as exc:
            return [str(exc)]
        out = []
        minutes = self.time_min if minutes is None else minutes
        if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes <= 0:
            out.append(f"profile {self.name!r}: time_min must be a positive integer, got {minutes!r}")
        else:
            limit = self.time_limit(name)
            if limit is not None and minutes > limit:
                out.append(f"profile {self.name!r}: {minutes} min exceeds partition {name}'s limit of {limit} min "
                           f"(lower launch.time_min: runs resume from their checkpoints when requeued)")
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            out.append(f"profile {self.name!r}: gpus must be an integer >= 0, got {gpus!r}")
        elif gpus > self.gpus_per_node:
            out.append(f"profile {self.name!r}: a job asks for {gpus} GPU(s) per node but nodes have "
                       f"{self.gpus_per_node} (lower launch.gpus_per_run)")
        node_cpus, node_mem = self.node_cpus(), self.node_mem_gb()
        if cpus is not None and node_cpus is not None and cpus > node_cpus:
            out.append(f"profile {self.name!r}: a job asks for {cpus} CPU(s) but nodes have {node_cpus} "
                       f"(lower launch.cpus_per_run)")
        if mem_gb is not None and node_mem is not None and mem_gb > node_mem:
            out.append(f"profile {self.name!r}: a job asks for {mem_gb:g} GB but nodes have {node_mem:g} GB "
                       f"(lower launch.mem_gb)")
        return out + self.placeholders()

    def executor_parameters(
        self, gpus: int = 0, time_min: int | None = None, partition: str | None = "default", check: bool = True
    ) -> dict[str, Any]:
        """Keyword arguments for submitit's ``AutoExecutor.update_parameters`` (one task per node).

        gpus: GPUs per node for the job (0: CPU only); at most ``gpus_per_node``.
        time_min: wall time in minutes (default ``time_min``); at most the partition's limit.
        partition: a role in ``partitions`` (``default``, ``debug``, ...) or one of its partition names.
        ``check``: raise :class:`ProfileError` with the first of :meth:`problems` other than placeholders
        (False: build them anyway; :mod:`harness.launch.submission` lists every problem beside them).
        """
        slurm_partition = self.partition_name(partition)
        minutes = self.time_min if time_min is None else time_min
        hard = [p for p in self.problems(gpus, minutes, partition) if p not in self.placeholders()]
        if hard and check:
            raise ProfileError(hard[0])
        params: dict[str, Any] = {
            "timeout_min": minutes,
            "nodes": 1,
            "tasks_per_node": 1,
            "slurm_partition": slurm_partition,
            "slurm_array_parallelism": self.array_parallelism,
        }
        for key in ("account", "qos", "constraint"):
            if getattr(self, key) is not None:
                params[f"slurm_{key}"] = getattr(self, key)
        if gpus:
            if self.gres is not None:
                params["slurm_gres"] = self.gres.format(gpus=gpus, gpu_type=self.gpu_type or "")
            else:
                params["gpus_per_node"] = gpus
            if self.cpus_per_gpu is not None:
                params["cpus_per_task"] = self.cpus_per_gpu * gpus
            if self.mem_per_gpu_gb is not None:
                params["mem_gb"] = self.mem_per_gpu_gb * gpus
        else:
            params["cpus_per_task"] = self.cpus_per_task
            if self.mem_gb is not None:
                params["mem_gb"] = self.mem_gb
        if self.setup:
            params["slurm_setup"] = list(self.setup)
        if self.additional_parameters:
            params["slurm_additional_parameters"] = dict(self.additional_parameters)
        return params


PLACEHOLDER_MARKS = ("CHANGE-ME", "CHANGEME", "CHANGE_ME", "YOUR-", "YOUR_")


def is_placeholder(value: str) -> bool:
    """``CHANGE-ME``, ``your-account``, ``<account>``: a value left as an example profile gave it."""
    text = value.strip()
    return (text.startswith("<") and text.endswith(">")) or any(m in text.upper() for m in PLACEHOLDER_MARKS)


_FIELDS = {f.name: f for f in dataclasses.fields(ClusterProfile) if f.name != "source"}
_OPTIONAL_STR = ("description", "account", "qos", "constraint", "gpu_type", "gres")


def _listing(names) -> str:
    return ", ".join(sorted(names)) or "(none)"


def available_profiles() -> list[str]:
    """Names of the profiles in ``slurm/profiles``."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | os.PathLike) -> ClusterProfile:
    """Read and validate a cluster profile: a name in ``slurm/profiles`` (``local``) or a YAML path.

    Raises :class:`ProfileError` naming the file and the problem: an unknown key (with the valid keys),
    a missing ``partitions.default``, a wrong type or a negative count.
    """
    text = os.fspath(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        path = Path(text)
    else:
        path = PROFILES_DIR / f"{text}.yaml"
    if not path.is_file():
        raise ProfileError(
            f"no cluster profile {text!r} (looked for {path}); available: {_listing(available_profiles())}"
        )
    import yaml  # PyYAML: only needed here

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:  # one line, as a spec's: where and what (PyYAML's own text spans lines)
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ProfileError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    return profile_from_dict(data if data is not None else {}, source=str(path), default_name=path.stem)


def profile_from_dict(data: Any, source: str = "<dict>", default_name: str | None = None) -> ClusterProfile:
    """Validate a profile given as a mapping (the parsed YAML); see :func:`load_profile`."""

    def bad(message: str) -> ProfileError:
        return ProfileError(f"{source}: {message}")

    if not isinstance(data, Mapping):
        raise bad(f"a profile is a mapping of keys to values, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), _FIELDS, 1)
            hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
        raise bad(f"unknown key(s) {', '.join(hints)}; valid keys: {_listing(_FIELDS)}")
    values = dict(data)
    values.setdefault("name", default_name)
    if not isinstance(values["name"], str) or not values["name"]:
        raise bad("'name' must be a non-empty string")

    partitions = values.get("partitions")
    if isinstance(partitions, str):
        partitions = {"default": partitions}
    if not isinstance(partitions, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in partitions.items()
    ):
        raise bad("'partitions' must map roles to partition names, e.g. {default: gpu, debug: dev}")
    if "default" not in partitions:
        raise bad(f"'partitions' needs a 'default' entry (roles given: {_listing(partitions)})")
    values["partitions"] = dict(partitions)

    for key in _OPTIONAL_STR:
        if values.get(key) is not None and not isinstance(values[key], str):
            raise bad(f"{key!r} must be a string or null, got {values[key]!r}")
    if values.get("description") is None:
        values["description"] = ""
    for key, minimum, nullable in (
        ("gpus_per_node", 0, False),
        ("cpus_per_gpu", 1, True),
        ("cpus_per_task", 1, False),
        ("time_min", 1, False),
        ("max_time_min", 1, True),
        ("cpus_per_node", 1, True),
        ("array_parallelism", 1, False),
    ):
        if key not in values or (nullable and values[key] is None):
            continue
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise bad(f"{key!r} must be an integer >= {minimum}{' or null' if nullable else ''}, got {value!r}")
    limits = values.get("time_limits")
    if limits is None:
        values["time_limits"] = {}
    elif not isinstance(limits, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0 for k, v in limits.items()
    ):
        raise bad(f"'time_limits' must map partition names to minutes > 0, got {limits!r}")
    else:
        values["time_limits"] = dict(limits)
    for key in ("mem_per_gpu_gb", "mem_gb", "mem_per_node_gb"):
        value = values.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise bad(f"{key!r} must be a positive number of GB or null, got {value!r}")
    if values.get("max_time_min") is not None and values.get("time_min", 60) > values["max_time_min"]:
        raise bad(f"'time_min' ({values.get('time_min', 60)}) exceeds 'max_time_min' ({values['max_time_min']})")
    if values.get("gres") is not None:
        if "{gpus}" not in values["gres"]:
            raise bad(f"'gres' must contain '{{gpus}}', e.g. 'gpu:{{gpu_type}}:{{gpus}}', got {values['gres']!r}")
        try:
            values["gres"].format(gpus=1, gpu_type="x")
        except (KeyError, IndexError, ValueError):
            raise bad(f"'gres' may use only {{gpus}} and {{gpu_type}}, got {values['gres']!r}") from None
        if "{gpu_type}" in values["gres"] and not values.get("gpu_type"):
            raise bad("'gres' uses {gpu_type} but 'gpu_type' is not set")
    setup = values.get("setup")
    if setup is None:
        values["setup"] = ()
    elif isinstance(setup, list) and all(isinstance(line, str) for line in setup):
        values["setup"] = tuple(setup)
    else:
        raise bad(f"'setup' must be a list of shell lines, got {setup!r}")
    extra = values.get("additional_parameters")
    if extra is None:
        values["additional_parameters"] = {}
    elif not isinstance(extra, Mapping) or not all(isinstance(k, str) for k in extra):
        raise bad(f"'additional_parameters' must map sbatch option names to values, got {extra!r}")
    else:
        values["additional_parameters"] = dict(extra)
    return ClusterProfile(**values, source=source)


# --------------------------------------------------------------------------------------------------
# A site profile from what sinfo reports

#: What ``harness cluster init`` asks sinfo: partition (``*`` the default), time limit, generic resources
#: (GPUs), CPUs and memory (MB) of a node.
SINFO_FORMAT = "%P|%l|%G|%c|%m"


@dataclasses.dataclass(frozen=True)
class SinfoPartition:
    """A partition as the profile sees it: where ``nodes`` (its kinds of node, one per sinfo line) differ,
    the values a job may count on on every node: the least GPUs, CPUs and memory of its GPU nodes (of all
    its nodes when none has GPUs), and a GPU type only when all those nodes have the same one."""

    name: str
    default: bool
    time_limit_min: int | None  # None: infinite
    gpus: int
    gpu_type: str | None
    cpus: int
    mem_gb: float
    nodes: tuple["SinfoPartition", ...] = ()  # its node kinds (one per sinfo line); () for a node kind itself
    at_least: bool = False  # sinfo printed a '+' (nodes of one line differ; the value is their least)

    def job_nodes(self) -> tuple["SinfoPartition", ...]:
        """The node kinds a GPU job may land on (those with GPUs; all of them when none has)."""
        kinds = self.nodes or (self,)
        return tuple(n for n in kinds if n.gpus) or kinds

    def gpu_types(self) -> set[str | None]:
        return {n.gpu_type for n in self.job_nodes() if n.gpus}

    def differs(self) -> bool:
        """Its node kinds differ in GPUs, their type, CPUs or memory."""
        return len({(n.gpus, n.gpu_type, n.cpus, n.mem_gb) for n in self.job_nodes()}) > 1


def _sinfo_minutes(text: str) -> int | None:
    """sinfo's time limit (``2-00:00:00``, ``1:00:00``, ``30:00``, ``infinite``) in minutes."""
    text = text.strip()
    if text in ("infinite", "UNLIMITED", "n/a", ""):
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, seconds = parts[-3:]
    return (int(days or 0) * 24 + hours) * 60 + minutes + (1 if seconds else 0)


def _sinfo_gpus(gres: str) -> tuple[int, str | None]:
    """GPUs a node and their type from sinfo's ``%G`` (``gpu:a100:8(S:0-1)``, ``gpu:4``, ``(null)``)."""
    best = (0, None)
    for item in gres.split(","):
        item = item.split("(")[0].strip()
        fields = item.split(":")
        if fields[0] != "gpu" or len(fields) < 2 or not fields[-1].isdigit():
            continue
        count, kind = int(fields[-1]), (fields[1] if len(fields) == 3 else None)
        if count > best[0]:
            best = (count, kind)
    return best


def parse_sinfo(text: str) -> list[SinfoPartition]:
    """Partitions from ``sinfo -h -o SINFO_FORMAT``: sinfo prints one line per partition and kind of node
    (nodes that differ in GRES, CPUs or memory); each partition keeps its kinds in ``nodes`` and, as its
    own values, what every one of its (GPU) nodes has (see :class:`SinfoPartition`). Raises
    :class:`ProfileError` on a line it cannot read."""
    kinds: dict[str, list[SinfoPartition]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split("|")
        if len(fields) != 5:
            raise ProfileError(f"sinfo line {number}: expected {SINFO_FORMAT!r} fields, got {line.strip()!r}")
        name, limit, gres, cpus, mem = fields
        try:
            gpus, gpu_type = _sinfo_gpus(gres)
            kind = SinfoPartition(name=name.rstrip("*"), default=name.endswith("*"), time_limit_min=_sinfo_minutes(limit),
                                  gpus=gpus, gpu_type=gpu_type, cpus=int(cpus.rstrip("+")),
                                  mem_gb=int(mem.rstrip("+")) / 1024, at_least=cpus.endswith("+") or mem.endswith("+"))
        except ValueError:
            raise ProfileError(f"sinfo line {number}: cannot read {line.strip()!r} as {SINFO_FORMAT!r}") from None
        kinds.setdefault(kind.name, []).append(kind)
    out = []
    for name, found in kinds.items():
        part = SinfoPartition(name=name, default=any(k.default for k in found), time_limit_min=found[0].time_limit_min,
                              gpus=0, gpu_type=None, cpus=0, mem_gb=0.0, nodes=tuple(found),
                              at_least=any(k.at_least for k in found))
        nodes = part.job_nodes()
        types = part.gpu_types()
        out.append(dataclasses.replace(
            part, gpus=min(n.gpus for n in nodes), gpu_type=next(iter(types)) if len(types) == 1 else None,
            cpus=min(n.cpus for n in nodes), mem_gb=min(n.mem_gb for n in nodes)))
    return out


def _node_kind(n: SinfoPartition) -> str:
    gpus = f"{n.gpus} x {n.gpu_type or 'untyped'} GPU(s)" if n.gpus else "no GPU"
    return f"{gpus}, {n.cpus}{'+' if n.at_least else ''} CPUs, {n.mem_gb:g} GB"


def sinfo_ambiguities(parts: list[SinfoPartition], default: SinfoPartition, profile: str) -> list[str]:
    """One line per choice that sinfo's answer leaves open (what differs, what was written, what to edit)."""
    out = []
    if default.differs():
        out.append(
            f"partition {default.name}'s nodes differ ({'; '.join(_node_kind(n) for n in default.job_nodes())}): "
            f"wrote the least of each (gpus_per_node {default.gpus}, cpus_per_node {default.cpus}, "
            f"mem_per_node_gb {round(default.mem_gb, 1):g}) so that a job fits every node; to use only the larger "
            f"ones, raise them in {profile} and set constraint: to a feature only those nodes have")
    typed = {p.name: p.gpu_types() for p in parts if p.gpus}
    all_types = set().union(*typed.values()) if typed else set()
    if len(all_types) > 1:
        listing = "; ".join(f"{name}: {', '.join(sorted(t or 'untyped' for t in types))}"
                            for name, types in typed.items())
        out.append(
            f"GPU types differ across nodes ({listing}): wrote gpu_type: null and gres: null (GPUs via "
            f"--gpus-per-node, any type), since one type in gres would be asked on every partition; to ask for "
            f"one, set gpu_type and gres: \"gpu:{{gpu_type}}:{{gpus}}\" in {profile} (and use only partitions whose "
            f"nodes all have it) or a constraint")
    for p in parts:
        if p is default or not p.gpus:
            continue
        if (p.gpus, p.cpus, round(p.mem_gb, 1)) != (default.gpus, default.cpus, round(default.mem_gb, 1)):
            out.append(
                f"partition {p.name}'s nodes ({'; '.join(_node_kind(n) for n in p.job_nodes())}) differ from the "
                f"default partition {default.name}'s, whose values {profile} holds: a job sent there with "
                f"--partition {p.name} is checked against {default.name}'s nodes; if you submit there, edit "
                f"gpus_per_node, cpus_per_node and mem_per_node_gb, or write another profile from its sinfo lines")
    if any(k.at_least for k in default.job_nodes()):
        out.append(f"sinfo printed '+' for partition {default.name} (its nodes on one line differ): the least is "
                   f"written; check with sinfo -N -p {default.name} -o '%N|%G|%c|%m'")
    return out


def read_sinfo() -> str:
    """``sinfo``'s answer in :data:`SINFO_FORMAT`; :class:`ProfileError` when it does not answer."""
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", SINFO_FORMAT], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise ProfileError("sinfo is not installed here: run this on the cluster's login node, or copy "
                           "slurm/profiles/example-a100.yaml and edit it") from None
    except subprocess.TimeoutExpired:
        raise ProfileError("sinfo did not answer within 30 s (is the controller up, SLURM_CONF right?): run it where "
                           f"it answers, or save its output there (sinfo -h -o '{SINFO_FORMAT}' > sinfo.txt) and pass "
                           "--sinfo sinfo.txt") from None
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["no output"])[0]
        raise ProfileError(f"sinfo failed ({first}): run this where sinfo answers (a login node)")
    return proc.stdout


def profile_text_from_sinfo(name: str, text: str, account: str | None = None) -> str:
    """A profile (YAML text, commented) for the site whose ``sinfo`` printed ``text``: its partitions (the
    default one marked ``*`` first, a ``debug`` role for a partition named like one), GPUs, CPUs and memory
    of a node, and each partition's time limit. The account is a placeholder unless given."""
    return profile_from_sinfo(name, text, account)[0]


def profile_from_sinfo(name: str, text: str, account: str | None = None,
                       where: str | None = None) -> tuple[str, list[str]]:
    """:func:`profile_text_from_sinfo`'s text and one line per ambiguity it resolved (:func:`sinfo_ambiguities`):
    where the default partition's nodes differ it writes the least GPUs, CPUs and memory of a node; where
    GPU types differ across the nodes (or some are untyped) no type; a comment beside each such value.
    ``where``: the profile's path, named in the lines."""
    parts = parse_sinfo(text)
    if not parts:
        raise ProfileError("sinfo listed no partitions")
    default = next((p for p in parts if p.default), None) or max(parts, key=lambda p: p.gpus)
    roles = {"default": default.name}
    for p in parts:
        if p is not default and "debug" not in roles and any(w in p.name.lower() for w in ("debug", "dev", "test")):
            roles["debug"] = p.name
    for p in parts:
        if p.name not in roles.values():
            roles[p.name.replace("-", "_")] = p.name
    warnings = sinfo_ambiguities(parts, default, where or f"slurm/profiles/{name}.yaml")
    gpus = default.gpus
    typed = {t for p in parts if p.gpus for t in p.gpu_types()}
    gpu_type = default.gpu_type if len(typed) == 1 else None
    limit = default.time_limit_min

    def least(values) -> str:
        values = sorted(set(values), reverse=True)
        return f"   # least of partition {default.name}'s nodes ({', '.join(f'{v:g}' for v in values)})" if len(values) > 1 else ""

    nodes = default.job_nodes()
    if len(typed) > 1:
        listing = ", ".join(sorted(t or "untyped" for t in typed))
        type_note = f"   # nodes' GPU types differ ({listing}): none asked; see the warning of cluster init"
        gres = "gres: null   # GPUs via --gpus-per-node (any type)"
    else:
        type_note = ""
        gres = "gres: " + ('"gpu:{gpu_type}:{gpus}"' if gpu_type else "null   # GPUs via --gpus-per-node")
    lines = [
        f"# Site profile written by `harness cluster init {name}` from sinfo ({len(parts)} partition(s)).",
        "# Check every value, set the account, then: harness run SPEC --cluster " + name + " --dry-run",
        f"name: {name}",
        f"description: from sinfo; default partition {default.name}, {gpus}{' ' + gpu_type if gpu_type else ''} "
        f"GPU(s) a node",
        "partitions:",
        *[f"  {role}: {part}" for role, part in roles.items()],
        f"account: {account or 'CHANGE-ME'}" + ("" if account else "   # your project / allocation (sacctmgr show assoc user=$USER)"),
        "qos: null",
        "constraint: null",
        f"gpu_type: {gpu_type or 'null'}" + type_note,
        gres,
        f"gpus_per_node: {gpus}" + least(n.gpus for n in nodes),
        f"cpus_per_node: {default.cpus}" + least(n.cpus for n in nodes),
        f"mem_per_node_gb: {round(default.mem_gb, 1):g}" + least(round(n.mem_gb, 1) for n in nodes),
        f"cpus_per_gpu: {default.cpus // gpus if gpus else 'null'}",
        f"mem_per_gpu_gb: {int(default.mem_gb // gpus) if gpus else 'null'}",
        f"cpus_per_task: {min(4, default.cpus)}",
        "mem_gb: null",
        f"time_min: {min(720, limit) if limit else 720}",
        "max_time_min: null   # each partition's own limit is under time_limits (none listed: no limit)",
        "time_limits:" + ("" if any(p.time_limit_min for p in parts) else " {}"),
        *[f"  {p.name}: {p.time_limit_min}" for p in parts if p.time_limit_min],
        "array_parallelism: 32",
        "setup: []           # e.g. module load cuda",
        "additional_parameters: {}",
    ]
    return "\n".join(lines) + "\n", warnings


# --------------------------------------------------------------------------------------------------
# The local test cluster


def cluster_dir() -> Path:
    """Where the local cluster keeps everything: ``$HARNESS_SLURM_DIR`` or ``/tmp/harness-slurm``."""
    return Path(os.environ.get("HARNESS_SLURM_DIR") or DEFAULT_CLUSTER_DIR).absolute()


def _parse_exports(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, value = words[1].split("=", 1)
            env[key] = value
    return env


def local_cluster_env() -> dict[str, str]:
    """Variables (``SLURM_CONF``, ``HARNESS_SLURM_DIR``) that point SLURM's commands at the running
    local cluster, read from the env file ``slurm/up.sh`` writes. Raises :class:`ClusterUnavailable`
    when the cluster is not up (``make slurm-up`` or :func:`ensure_local_cluster` starts it)."""
    env_file = cluster_dir() / "env.sh"
    try:
        env = _parse_exports(env_file.read_text())
    except FileNotFoundError:
        raise ClusterUnavailable(
            f"the local SLURM cluster is not running (no {env_file}); start it with `make slurm-up`"
        ) from None
    if not env.get("SLURM_CONF") or not Path(env["SLURM_CONF"]).is_file():
        raise ClusterUnavailable(
            f"{env_file} names no existing SLURM_CONF; restart the cluster with `make slurm-up`"
        )
    return env


def _run_script(
    name: str, args: list[str], timeout: float, extra_env: Mapping[str, str]
) -> subprocess.CompletedProcess:
    if not sys.platform.startswith("linux"):
        raise ClusterUnavailable(f"the local SLURM cluster needs Linux (this is {sys.platform})")
    script = SLURM_SCRIPTS / name
    if not script.is_file():
        raise ClusterUnavailable(f"{script} is missing (harness installed outside its checkout?)")
    env = {**os.environ, **extra_env}
    try:
        # The daemons are started with their output redirected, so the pipes close when the script ends.
        return subprocess.run(
            ["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=timeout
        )
    except FileNotFoundError:
        raise ClusterUnavailable("bash is not installed") from None
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        tail = "\n".join(err.strip().splitlines()[-5:])
        message = f"slurm/{name} did not finish within {timeout:.0f}s"
        raise ClusterUnavailable(message + (f"; last output:\n{tail}" if tail else "")) from None


def _failure(proc: subprocess.CompletedProcess, name: str) -> str:
    lines = proc.stderr.strip().splitlines()
    for i, line in enumerate(lines):  # from the script's error line on: the message and the log tail
        if line.startswith("[slurm] error:"):
            return "\n".join(lines[i:])
    return f"slurm/{name} exited with status {proc.returncode}" + (":\n" + "\n".join(lines[-10:]) if lines else "")


def ensure_local_cluster(timeout: float = 300.0, install: bool = True) -> dict[str, str]:
    """Start the local SLURM cluster if it is not running (installing SLURM with apt if ``install``
    and it is missing) and wait until its node is idle and ``sacct`` answers.

    Returns the variables to put in the environment of anything that calls SLURM's commands (submitit
    calls ``sbatch``, ``sacct``, ``scancel``): ``os.environ.update(ensure_local_cluster())``.
    Raises :class:`ClusterUnavailable` with the reason (not root, no apt, a daemon that did not start
    and the tail of its log, or ``timeout`` seconds passed). Fast when the cluster is already up.
    """
    extra = {"HARNESS_SLURM_DIR": str(cluster_dir())}
    if not install:
        extra["HARNESS_SLURM_NO_INSTALL"] = "1"
    if "HARNESS_SLURM_TIMEOUT" not in os.environ:  # each daemon's wait; the whole script gets `timeout`
        extra["HARNESS_SLURM_TIMEOUT"] = str(max(5, min(60, int(timeout))))
    proc = _run_script("up.sh", [], timeout, extra)
    if proc.returncode != 0:
        raise ClusterUnavailable(_failure(proc, "up.sh"))
    env = _parse_exports(proc.stdout)
    if "SLURM_CONF" not in env:
        raise ClusterUnavailable(f"slurm/up.sh printed no SLURM_CONF; its output was:\n{proc.stdout}{proc.stderr}")
    return env
