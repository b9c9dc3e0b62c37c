"""`harness cluster init NAME --sinfo FILE` on a cluster whose nodes differ: sinfo (``-h -o '%P|%l|%G|%c|%m'``)
prints one line per partition and kind of node. The profile must hold what every node of the default
partition has, ask for no GPU type where the nodes' types differ or are untyped, and say each choice:
a comment beside the value and a warning line on stderr."""

from __future__ import annotations

from pathlib import Path

from harness.cli import main
from harness.launch.cluster import load_profile

# partition gpu (the default) has 4 x A100 / 64 CPUs / 500 GB nodes and 8 x V100 / 40 CPUs / 375 GB nodes;
# long has untyped gpu:8 nodes; cpu has none
MIXED = """gpu*|2-00:00:00|gpu:a100:4(S:0-1)|64|512000
gpu*|2-00:00:00|gpu:v100:8(S:0-1)|40|384000
long|7-00:00:00|gpu:8|64|1024000
cpu|infinite|(null)|128|512000
"""

UNIFORM = """gpu*|2-00:00:00|gpu:a100:8(S:0-1)|64|1024000
gpu-debug|2:00:00|gpu:a100:8(S:0-1)|64|1024000
cpu|infinite|(null)|128|512000
"""


def init(tmp_path: Path, sinfo: str, capsys) -> tuple[Path, str, list[str]]:
    saved = tmp_path / "sinfo.txt"
    saved.write_text(sinfo)
    out = tmp_path / "site.yaml"
    assert main(["cluster", "init", "site", "--sinfo", str(saved), "--out", str(out), "--account", "lab"]) == 0
    captured = capsys.readouterr()
    return out, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def test_mixed_nodes_write_what_every_node_has_and_say_so(tmp_path, capsys):
    out, stdout, warnings = init(tmp_path, MIXED, capsys)
    profile = load_profile(out)
    # no GPU type asked (a100 and v100 in gpu, untyped in long): GPUs via --gpus-per-node
    assert (profile.gpu_type, profile.gres) == (None, None)
    for partition in ("default", "long"):
        params = profile.executor_parameters(gpus=4, time_min=60, partition=partition)
        assert params["gpus_per_node"] == 4 and "slurm_gres" not in params, params
    # the least of the default partition's nodes: a job within them fits every node
    assert (profile.gpus_per_node, profile.cpus_per_node, profile.mem_per_node_gb) == (4, 40, 375)
    assert (profile.cpus_per_gpu, profile.mem_per_gpu_gb) == (10, 93)
    assert profile.problems(gpus=8, minutes=60), "8 GPUs fit only some of gpu's nodes"
    assert profile.partitions == {"default": "gpu", "long": "long", "cpu": "cpu"}
    # a comment beside each chosen value
    text = out.read_text()
    assert "gpu_type: null   # nodes' GPU types differ (a100, untyped, v100)" in text
    assert "gpus_per_node: 4   # least of partition gpu's nodes (8, 4)" in text
    assert "cpus_per_node: 40   # least of partition gpu's nodes (64, 40)" in text
    assert "mem_per_node_gb: 375   # least of partition gpu's nodes (500, 375)" in text
    assert "v100" not in stdout.split("wrote ")[-1]
    # one warning line per ambiguity: what differs, what was written, what to edit
    assert len(warnings) == 3 and all(line.startswith("warning: ") for line in warnings), warnings
    nodes, types, long = warnings
    assert "partition gpu's nodes differ (4 x a100 GPU(s), 64 CPUs, 500 GB; 8 x v100 GPU(s), 40 CPUs, 375 GB)" in nodes
    assert "gpus_per_node 4, cpus_per_node 40, mem_per_node_gb 375" in nodes and str(out) in nodes
    assert "GPU types differ across nodes (gpu: a100, v100; long: untyped)" in types
    assert "wrote gpu_type: null and gres: null" in types and "gres: \"gpu:{gpu_type}:{gpus}\"" in types
    assert "partition long's nodes (8 x untyped GPU(s), 64 CPUs, 1000 GB) differ" in long
    assert "--partition long" in long and "gpus_per_node" in long


def test_a_typed_default_with_untyped_gpus_elsewhere_asks_for_no_type(tmp_path, capsys):
    sinfo = "gpu*|2-00:00:00|gpu:a100:4(S:0-1)|64|512000\nlong|7-00:00:00|gpu:4|64|512000\n"
    out, _, warnings = init(tmp_path, sinfo, capsys)
    profile = load_profile(out)
    assert (profile.gpu_type, profile.gres, profile.gpus_per_node, profile.cpus_per_node) == (None, None, 4, 64)
    assert len(warnings) == 1 and "GPU types differ across nodes (gpu: a100; long: untyped)" in warnings[0]


def test_uniform_nodes_keep_their_type_and_warn_nothing(tmp_path, capsys):
    out, _, warnings = init(tmp_path, UNIFORM, capsys)
    profile = load_profile(out)
    assert (profile.gpu_type, profile.gres) == ("a100", "gpu:{gpu_type}:{gpus}")
    assert (profile.gpus_per_node, profile.cpus_per_node, profile.mem_per_node_gb) == (8, 64, 1000)
    assert warnings == []
    assert "least of" not in out.read_text() and "differ" not in out.read_text()
