import os
import sys

import pytest


@pytest.fixture(scope="session")
def slurm_cluster():
    """The loopback SLURM test cluster (slurm/up.sh), started once per session; installs SLURM with apt
    when missing. Yields the variables that point SLURM's commands at it (they are also set in
    os.environ for the session, so that submitit's sbatch/sacct calls find the cluster). Skips with the
    reason where SLURM cannot be installed or started; fails instead when HARNESS_REQUIRE_SLURM=1.
    The cluster keeps running after the session (`make slurm-down` stops it)."""
    from harness.launch.cluster import ClusterUnavailable, ensure_local_cluster

    try:
        env = ensure_local_cluster(timeout=float(os.environ.get("HARNESS_SLURM_UP_TIMEOUT", "300")))
    except ClusterUnavailable as exc:
        message = f"local SLURM cluster unavailable: {exc.reason}"
        if os.environ.get("HARNESS_REQUIRE_SLURM") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _isolated_loss_registry():
    """Losses a test registers (external modules, CLI --load) are forgotten after it, so that specs
    naming `losses: all` see the same five losses in every test."""
    from harness.losses import registry

    saved = dict(registry._REGISTRY)
    modules = {name for name in sys.modules if name.startswith("harness_external_")}
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
    # the external modules imported meanwhile go too: importing one again registers its losses again
    for name in [n for n in sys.modules if n.startswith("harness_external_") and n not in modules]:
        del sys.modules[name]
