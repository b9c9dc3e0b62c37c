"""A run's fingerprint: what decides its result beyond its spec, recorded in its row and compared with
what the current code would build (``harness status`` shows a difference as ``stale``).

A run's id hashes its spec (data, profile, detector, loss, schedule, processes, seed, loss-module names,
backbone start). The fingerprint covers the rest, as :func:`recorded` takes it in the job's process:

* ``config``: a hash of the final mmengine config the run trains (:func:`harness.run.train.build_config`),
  without what is local to one run and does not change its result: the work folder, the data's location
  (the data root, written ``<data>``: its content is covered by the dataset's entry in the spec and the
  generator version), the predictions file, the seed (in the run's id), and what the process set-up
  decides (launcher, resume, distributed wrapper and backend);
* ``harness_tree``: the code under ``harness/`` as it is on disk, git's tree id of its code files
  computed without git (:func:`harness_tree`): ``HEAD:harness`` for a clean checkout, so a commit that
  changes only docs or tests changes nothing, while uncommitted changes (untracked files included) change
  it. The same files give the same id on every machine, whether git answers there or not (git refuses a
  checkout another user owns unless told it is safe, which :func:`_git` does for this checkout alone), so
  teammates' rows of the same code compare equal; git only names the commits in the words of a
  difference. ``harness_changes`` stays None (rows written before recorded a hash of uncommitted changes
  there; kept so that a clean checkout's rows keep their digest); ``harness_version``;
* ``loss_modules``: the sha256 of every external loss module's file as it was imported, for a run of a
  loss they register (a run of one of the harness's own losses takes nothing from them: editing your
  loss module leaves the baselines done; what a module does beyond registering losses is not tracked);
* ``versions``: torch, torchvision, mmcv, mmengine, mmdet;
* ``generator_version``: the synthetic generator's version (synthetic data only; None for real data);
* ``data_files``: for your own COCO-format data, the sha256 of the train and val annotation files (the
  spec names only their paths, so a relabelled file makes the runs on it stale; the image files are not
  hashed). None for the other kinds: synthetic data is set by its entry and the generator version,
  COCO / LVIS are fixed releases.

The code part is taken once per process, when this module is imported: the moment the run's code is
loaded (a SLURM job unpickling its RunJob, the local pool's preloaded server, the driver for the debug
executor); a later edit of the checkout does not change what that process runs, nor its fingerprint.
The row also keeps the commit (``git_commit``) and where the loss modules were read from (``origin``).

:func:`current` computes the fingerprint the current code gives a run, without training: the config
is built (data and loss modules as the job would use them), once per cell and data set in a process
and cached on disk by everything it depends on (``work/fingerprints.json``), so ``harness status`` over
a hundred runs builds a few dozen configs the first time and none after. :func:`stale_reasons` says in
words what differs.

A run preempted and resumed is trained by several starts, each a process that took its own fingerprint:
the row's is its last start's, with under ``resumed_from`` those of the earlier starts that differ
(:func:`with_starts`; :mod:`harness.run.job` records each start). Such a row is stale whatever the current
code ("resumed under other code: harness code changed (commit a -> b) between its starts"), and its
``digest`` is none of its starts', so that no table counts it among the rows of one fingerprint.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import subprocess
from pathlib import Path
from typing import Any, Mapping

from harness.experiments.spec import RunSpec
from harness.files import file_sha256

FINGERPRINT_PACKAGES = ("torch", "torchvision", "mmcv", "mmengine", "mmdet")
CODE_SUFFIXES = (".py", ".c")  # the harness's code: its Python modules and its C kernels' sources
PROVENANCE_PACKAGES = FINGERPRINT_PACKAGES + ("numpy", "pycocotools", "lvis", "submitit")
ROOT = Path(__file__).resolve().parents[2]
CACHE_FILE = "fingerprints.json"  # in results/<experiment>/work/: config digests already computed


def _sha(data: bytes | str, n: int = 16) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:n]


def _git(*args: str, root: Path | None = None) -> bytes | None:
    """``git ARGS`` in checkout ``root`` (default :data:`ROOT`; read-only questions), its output; None when
    git cannot answer. ``safe.directory`` names this checkout alone: git refuses a checkout another user owns ("detected
    dubious ownership"), e.g. a teammate's, which would make the same code look changed between them;
    ``--no-optional-locks``: ``git status`` never writes the index of someone else's checkout."""
    root = Path(root or ROOT)
    try:
        return subprocess.run(["git", "-c", f"safe.directory={root}", "--no-optional-locks", *args], cwd=root,
                              capture_output=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def _git_object(kind: bytes, data: bytes) -> bytes:
    return hashlib.sha1(kind + b" %d\0" % len(data) + data).digest()


def harness_tree(folder: Path) -> str | None:
    """git's tree id of the code files (:data:`CODE_SUFFIXES`: Python, and the C kernels' sources) under
    ``folder`` as they are on disk (``__pycache__`` left out),
    computed here without git: for a clean checkout it is ``git rev-parse HEAD:harness``; with uncommitted
    changes (untracked files included) it is the tree their commit would have. The same content gives the
    same id on every machine, whether git works there or not. None when there is no code file."""
    entries = []
    try:
        children = sorted(Path(folder).iterdir())
    except OSError:
        return None
    for child in children:
        name = child.name.encode()
        if child.is_symlink():
            if child.suffix in CODE_SUFFIXES:
                entries.append((b"120000", name, _git_object(b"blob", str(child.readlink()).encode()), False))
        elif child.is_dir():
            sub = harness_tree(child) if child.name != "__pycache__" else None
            if sub is not None:
                entries.append((b"40000", name, bytes.fromhex(sub), True))
        elif child.suffix in CODE_SUFFIXES and child.is_file():
            mode = b"100755" if child.stat().st_mode & 0o100 else b"100644"
            entries.append((mode, name, _git_object(b"blob", child.read_bytes()), False))
    if not entries:
        return None
    entries.sort(key=lambda e: e[1] + (b"/" if e[3] else b""))  # git's order: a folder sorts as "name/"
    return _git_object(b"tree", b"".join(mode + b" " + name + b"\0" + sha for mode, name, sha, _ in entries)).hex()


def _code_state(root: Path | None = None) -> dict:
    """The harness code of checkout ``root`` (default :data:`ROOT`) now: the tree of its files under
    harness/, the commit and dirty flag when git answers, versions (see the module docstring)."""
    from harness import __version__

    root = Path(root or ROOT)
    # harness_changes: rows before the tree covered uncommitted changes recorded a hash of them here; kept
    # (None), so that a row of a clean checkout keeps its digest
    out: dict[str, Any] = {"harness_version": __version__, "git_commit": None, "git_dirty": None,
                           "harness_tree": harness_tree(root / "harness"), "harness_changes": None}
    commit = _git("rev-parse", "HEAD", root=root)
    if commit:
        out["git_commit"] = commit.decode().strip()
        status = _git("status", "--porcelain", "--untracked-files=no", root=root)
        out["git_dirty"] = bool(status.strip()) if status is not None else None
    versions = {}
    for pkg in PROVENANCE_PACKAGES:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    out["versions"] = versions
    return out


LOADED = _code_state()  # this process's code, taken when it loaded it (see the module docstring)


def loaded_code() -> dict:
    """The harness code and package versions this process loaded (commit, dirty flag, versions ...)."""
    return json.loads(json.dumps(LOADED))


# ------------------------------------------------------------------------------------------------
# Components


def _module_file(name: str, origin: str) -> Path | None:
    """The file of loss module ``name`` (a ``.py`` path, relative to ``origin``, or a dotted name),
    found without importing it; None when there is none."""
    if name.endswith(".py"):
        path = Path(name)
        if not path.is_absolute() and origin:
            path = Path(origin) / path
        return path.resolve() if path.is_file() else None
    import importlib.util

    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return Path(found.origin) if found is not None and found.origin and Path(found.origin).is_file() else None


def _own_loss(name: str) -> bool:
    """``name`` is one of the harness's own losses (its functions are in the ``harness`` package)."""
    import harness.losses  # noqa: F401  (registers the harness's own losses)
    from harness.losses.registry import LOSSES

    spec = LOSSES.get(name)
    return spec is not None and all(getattr(f, "__module__", "").startswith("harness.") for f in (spec.fn, spec.classify))


def _loss_modules(run: RunSpec, loaded: bool) -> dict[str, str | None]:
    """Loss module → sha256 of its file: as imported in this process (``loaded``, falling back to the
    file now when it was not imported here), or as the file is now; none for a run of the harness's own
    losses."""
    from harness.losses.registry import loaded_source

    out = {}
    if _own_loss(run.loss):
        return out
    for name in run.loss_modules:
        target = name
        if name.endswith(".py") and not Path(name).is_absolute() and run.origin:
            target = str(Path(run.origin) / name)
        source = loaded_source(target) if loaded else None
        if source is not None:
            out[name] = source[1][:16]
            continue
        path = _module_file(name, run.origin)
        out[name] = _file_sha(path) if path is not None else None
    return out


def _generator_version(run: RunSpec) -> int | None:
    if not str(run.dataset.get("kind", "")).startswith("synthetic"):
        return None
    from harness.data.synthetic import GENERATOR_VERSION

    return GENERATOR_VERSION


def _file_sha(path: str) -> str | None:
    try:
        return file_sha256(path)[:16]  # read once per (path, size, mtime) in this process
    except OSError:
        return None


def _data_files(run: RunSpec) -> dict | None:
    """Split → sha256 of its annotation file, for ``coco_format`` data (None for the other kinds)."""
    if run.dataset.get("kind") != "coco_format":
        return None
    return {split: _file_sha(run.dataset[split]["ann"]) for split in ("train", "val") if split in run.dataset}


def _assemble(run: RunSpec, code: Mapping, loss_modules: Mapping, config: str | None) -> dict:
    components = {
        "config": config,
        "harness_version": code["harness_version"],
        "harness_tree": code["harness_tree"],
        "harness_changes": code["harness_changes"],
        "loss_modules": dict(loss_modules),
        "versions": {p: code["versions"].get(p) for p in FINGERPRINT_PACKAGES},
        "generator_version": _generator_version(run),
        "data_files": _data_files(run),
    }
    return {"digest": _sha(json.dumps(components, sort_keys=True)), "components": components,
            "git_commit": code["git_commit"], "origin": run.origin}


def recorded(run: RunSpec, config: str | None = None) -> dict:
    """The fingerprint of ``run`` as this process loaded it; ``config``: the digest of the config it
    trains (:func:`harness.run.train.config_digest`; None when it failed before building one)."""
    return _assemble(run, LOADED, _loss_modules(run, loaded=True), config)


def with_starts(final: Mapping, starts: list) -> dict:
    """A row's fingerprint: ``final`` (:func:`recorded` by the process that writes the row), with under
    ``resumed_from`` the fingerprints of the run's earlier starts whose training the row continues
    (``starts``: each start's fingerprint, None for a start that left no record) where they differ from
    it, once each, in order. Such a row's ``digest`` hashes all its fingerprints (the components stay the
    last start's), so that no table counts it among rows one fingerprint made."""
    out = dict(final, resumed_from=[])
    seen = {final["digest"]}
    for fp in starts:
        entry = ({k: fp.get(k) for k in ("digest", "components", "git_commit")} if isinstance(fp, Mapping) else
                 {"digest": None, "components": None, "git_commit": None})
        if entry["digest"] not in seen:
            seen.add(entry["digest"])
            out["resumed_from"].append(entry)
    if out["resumed_from"]:
        out["digest"] = _sha(json.dumps([e["digest"] for e in out["resumed_from"]] + [final["digest"]]))
    return out


# ------------------------------------------------------------------------------------------------
# The current fingerprint of a run, without training

_CONFIGS: dict[str, tuple[str | None, str | None]] = {}  # cache key → (digest, why it could not be built)


def _cell_key(run: RunSpec) -> str:
    """What a run's config depends on besides the code: its identity without the seed."""
    identity = {k: v for k, v in run.identity.items() if k != "seed"}
    return json.dumps(identity, sort_keys=True, default=str)


def _data_stamp(run: RunSpec) -> str | None:
    """The files a config reads (class names, validation images) as (size, mtime); synthetic data is
    set by its entry and the generator version. None when the data cannot be found here."""
    if str(run.dataset.get("kind", "")).startswith("synthetic"):
        return "synthetic"
    try:
        if run.dataset.get("kind") == "coco_format":  # its files are named in the entry: no need to check them
            files = [run.dataset[split]["ann"] for split in ("train", "val")]
        else:
            from harness.run.train import run_data

            files = run_data(run).ann_files.values()
        stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(map(Path, files))]
    except Exception:
        return None
    return json.dumps(stats)


def _build_config_digest(run: RunSpec) -> tuple[str | None, str | None]:
    try:
        from harness.experiments.spec import import_loss_modules
        from harness.run.train import build_config, config_digest, run_data

        import_loss_modules(run.loss_modules, run.origin)
        paths = run_data(run)
        cfg = build_config(run, Path("work"), paths, runtime=False)
        return config_digest(cfg, paths.root), None
    except Exception as exc:  # the data or a loss module is not here: the config is not compared
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]


def current(run: RunSpec, cache_dir: str | Path | None = None) -> dict:
    """The fingerprint the current code gives ``run`` (its config built, not trained). A config that
    cannot be built here (data absent, a loss module that does not import) leaves ``config`` None and
    says why under ``config_error``. ``cache_dir``: where config digests are kept between processes."""
    code = LOADED
    loss_modules = _loss_modules(run, loaded=False)
    key = json.dumps([_cell_key(run), run.origin if run.loss_modules else "", loss_modules], sort_keys=True)
    if key not in _CONFIGS:
        stamp = _data_stamp(run)
        disk_key = _sha(json.dumps([key, {k: code[k] for k in ("harness_version", "harness_tree", "harness_changes")},
                                    code["versions"], loss_modules, stamp], sort_keys=True), 32)
        cache_path = Path(cache_dir) / CACHE_FILE if cache_dir is not None else None
        cached = _read_cache(cache_path).get(disk_key) if cache_path and stamp else None
        if cached:
            _CONFIGS[key] = (cached, None)
        else:
            _CONFIGS[key] = _build_config_digest(run)
            if cache_path and stamp and _CONFIGS[key][0]:
                _write_cache(cache_path, disk_key, _CONFIGS[key][0])
    config, error = _CONFIGS[key]
    out = _assemble(run, code, loss_modules, config)
    if error:
        out["config_error"] = error
    return out


def _read_cache(path: Path | None) -> dict:
    try:
        data = json.loads(path.read_text()) if path is not None else {}
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, key: str, digest: str) -> None:
    from harness.files import write_json_atomic

    data = _read_cache(path)
    data[key] = digest
    try:
        write_json_atomic(path, data)
    except OSError:  # a cache: a read-only results folder only costs the next process a rebuild
        pass


# ------------------------------------------------------------------------------------------------
# Comparing


def stale_reasons(recorded_fp: Mapping | None, current_fp: Mapping) -> list[str]:
    """What differs between a row's fingerprint and the current one, in words; [] when nothing does.
    A row trained under more than one fingerprint (resumed after the code changed, its ``resumed_from``)
    is stale whatever the current code: first, what changed between its starts. A config that could not
    be built now (``config_error``) is not compared."""
    if not isinstance(recorded_fp, Mapping) or not isinstance(recorded_fp.get("components"), Mapping):
        return ["no fingerprint recorded"]
    out = []
    for earlier in recorded_fp.get("resumed_from") or []:
        if not isinstance(earlier, Mapping) or not isinstance(earlier.get("components"), Mapping):
            out.append("resumed from a checkpoint whose code was not recorded (its first start left no record)")
            continue
        what = _differences(earlier, recorded_fp, ("at its earlier start", "at its later start"))
        out.append(f"resumed under other code: {'; '.join(what) or 'fingerprint ' + str(earlier.get('digest'))} "
                   f"between its starts")
    return out + _differences(recorded_fp, current_fp, ("where the row was made", "here"))


def _differences(recorded_fp: Mapping, current_fp: Mapping, sides: tuple[str, str]) -> list[str]:
    """What differs from fingerprint ``recorded_fp`` to ``current_fp``, in words (``sides``: where each
    was taken, for the words of git not answering on one side)."""
    r, c = recorded_fp["components"], current_fp["components"]
    out = []
    if (r.get("harness_tree"), r.get("harness_changes")) != (c.get("harness_tree"), c.get("harness_changes")):
        out.append(_code_changed(recorded_fp.get("git_commit"), current_fp.get("git_commit"), sides))
    if r.get("harness_version") != c.get("harness_version"):
        out.append(f"harness {r.get('harness_version')} -> {c.get('harness_version')}")
    rv, cv = r.get("versions") or {}, c.get("versions") or {}
    for pkg in FINGERPRINT_PACKAGES:
        if rv.get(pkg) != cv.get(pkg):
            out.append(f"{pkg} {rv.get(pkg)} -> {cv.get(pkg)}")
    out += _files_changed(r.get("loss_modules"), c.get("loss_modules"), "loss module {}")
    if r.get("generator_version") != c.get("generator_version"):
        out.append(f"synthetic generator version {r.get('generator_version')} -> {c.get('generator_version')}")
    out += _files_changed(r.get("data_files"), c.get("data_files"), "{} annotation file")
    if c.get("config") is not None and r.get("config") != c.get("config"):
        out.append("config changed" if r.get("config") else "no config recorded (the run failed before building it)")
    return out


def _code_changed(a: str | None, b: str | None, sides: tuple[str, str]) -> str:
    """The files under harness/ differ between commit ``a`` and ``b`` (None: git did not answer there)."""
    if a and b:
        return (f"harness code changed (commit {a[:10]} -> {b[:10]})" if a != b else
                "harness code changed (uncommitted changes under harness/)")
    where = "on either side" if not a and not b else sides[0] if not a else sides[1]
    return f"harness code changed (the files under harness/ differ; git unavailable {where}, no commit to name)"


def _files_changed(recorded_shas: Mapping | None, current_shas: Mapping | None, what: str) -> list[str]:
    """``what`` (a format of the key) ``not found`` / ``changed`` for each file whose sha256 differs."""
    rec, cur = recorded_shas or {}, current_shas or {}
    out = []
    for key in sorted(set(rec) | set(cur)):
        if key in cur and cur[key] is None:
            out.append(f"{what.format(key)} not found")
        elif rec.get(key) != cur.get(key):
            out.append(f"{what.format(key)} changed")
    return out


def run_from_row(row: Mapping) -> RunSpec:
    """The :class:`RunSpec` a row was trained from, as far as its fingerprint needs (its launch is only
    its number of processes; relative loss-module paths are read from the recorded ``origin``)."""
    world = int(row.get("world_size") or 1)
    fp = row.get("fingerprint") if isinstance(row.get("fingerprint"), Mapping) else {}
    return RunSpec(experiment=row.get("experiment") or "", detector=row["detector"], loss=row["loss"],
                   seed=int(row.get("seed") or 0), dataset=dict(row.get("dataset") or {}),
                   profile=row.get("profile") or "tiny", schedule=dict(row.get("schedule") or {}),
                   launch={"tasks_per_run": world, "gpus_per_run": 0, "cpus_per_run": world},
                   loss_modules=tuple(row.get("loss_modules") or ()),
                   backbone_init=row.get("backbone_init") or "scratch", origin=fp.get("origin") or "")


def staleness(row: Mapping, results_dir: str | Path, run: RunSpec | None = None) -> tuple[list[str], str]:
    """(what changed, a note) for a ``done`` row of experiment folder ``results_dir``: how its fingerprint
    differs from what the current code builds for its run (``run``: the spec's, else rebuilt from the
    row); the note says when the config could not be compared here. ``harness status`` and the plan of
    ``harness run`` both ask this."""
    if not isinstance(row.get("fingerprint"), Mapping):
        return ["no fingerprint recorded"], ""
    now = current(run if run is not None else run_from_row(row), Path(results_dir) / "work")
    note = f"config not compared: {now['config_error']}" if now.get("config_error") else ""
    return stale_reasons(row["fingerprint"], now), note
