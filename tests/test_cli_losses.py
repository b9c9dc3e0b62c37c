"""`harness losses` and the command line's usage errors."""

from __future__ import annotations

import json
import subprocess
import sys

from harness.cli import main


def test_losses_lists_the_registry(capsys):
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    for name in ("alrp", "ap", "ce", "focal", "rs"):
        assert f"\n{name} " in out


def test_losses_json_and_external_module(tmp_path, capsys):
    mod = tmp_path / "cli_ext_loss.py"
    mod.write_text(
        "from harness.losses import LossSpec, register_loss, focal_loss, ClassificationOutput\n"
        "def c(l, t, loc_errors=None):\n    x = focal_loss(l, t)\n    return ClassificationOutput(x, {'f': x.detach()})\n"
        "register_loss(LossSpec(name='cli_ext', summary='test', fn=focal_loss, classify=c, targets='binary',"
        " ranking=False, balancing='fixed', module=__name__))\n"
    )
    assert main(["losses", "--load", str(mod), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"cli_ext", "rs"} <= {r["name"] for r in rows}


def test_usage_errors_exit_2_with_one_line(capsys):
    assert main(["losses", "--load", "/no/such/loss.py"]) == 2
    err = capsys.readouterr().err
    assert err == "harness losses: error: loss module file /no/such/loss.py does not exist\n"


def test_python_dash_m_and_no_command():
    r = subprocess.run([sys.executable, "-m", "harness"], capture_output=True, text=True)
    assert r.returncode == 2 and "COMMAND" in r.stdout
    r = subprocess.run([sys.executable, "-m", "harness", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice" in r.stderr
