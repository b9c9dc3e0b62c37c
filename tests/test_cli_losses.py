"""`harness losses` and the command line's usage errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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


EXT_LOSS = (
    "from harness.losses import LossSpec, register_loss, focal_loss, ClassificationOutput\n"
    "def c(l, t, loc_errors=None):\n    x = focal_loss(l, t)\n    return ClassificationOutput(x, {'f': x.detach()})\n"
    "register_loss(LossSpec(name='{name}', summary='test', fn=focal_loss, classify=c, targets='binary',"
    " ranking=False, balancing='fixed', module=__name__))\n"
)


def test_a_module_name_resolves_from_the_current_folder_as_under_python_dash_m(tmp_path, monkeypatch, capsys):
    """The `harness` console script does not put the current folder on sys.path (python -m does): --load
    MODULE from the module's own folder must find it all the same."""
    import os

    (tmp_path / "cwd_ext_loss.py").write_text(EXT_LOSS.replace("{name}", "cwd_ext"))
    monkeypatch.chdir(tmp_path)
    # sys.path as the console script has it: its own folder, no '' and not the current folder
    monkeypatch.setattr(sys, "path", [p for p in sys.path if os.path.abspath(p or os.curdir) != str(tmp_path)])
    monkeypatch.delitem(sys.modules, "cwd_ext_loss", raising=False)
    try:
        assert main(["losses", "--load", "cwd_ext_loss", "--json"]) == 0
        assert "cwd_ext" in {r["name"] for r in json.loads(capsys.readouterr().out)}
    finally:
        sys.modules.pop("cwd_ext_loss", None)
    assert main(["losses", "--load", "no_such_loss_module_xyz"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no module 'no_such_loss_module_xyz' in the current folder ({tmp_path})" in err
    assert "put its folder on PYTHONPATH or give a .py path" in err, err


def test_a_load_module_that_registers_no_loss_is_noted_not_refused(tmp_path, capsys):
    mod = tmp_path / "registers_nothing.py"
    mod.write_text("from harness.losses import focal_loss\n\nLOSS = focal_loss  # but never registered\n")
    assert main(["losses", "--load", str(mod), "--load", str(mod)]) == 0
    out, err = capsys.readouterr()
    assert "\nfocal " in out
    assert err == (f"note: loss module {mod} registered no loss; a loss module calls "
                   f"harness.losses.register_loss(LossSpec(name=..., ...)) when imported "
                   f"(see the README, 'Adding a loss')\n"), err  # once, though loaded twice
    # one that registers a loss loads without a note
    ext = tmp_path / "registers_one.py"
    ext.write_text(EXT_LOSS.replace("{name}", "noted_not"))
    assert main(["losses", "--load", str(ext)]) == 0
    assert capsys.readouterr().err == ""


VALID = "valid: alrp, ap, bucketed_ap, bucketed_rs, ce, focal, rs"
HINT = "; for a loss of your own, pass --load MODULE (the .py file or module that registers it)"


@pytest.mark.parametrize("command", [["check-cell", "atss", "mine"], ["check-loss", "mine"], ["cells", "--losses", "mine"],
                                     ["cells", "--changes", "atss", "mine"], ["cells", "--recipe", "atss", "mine"]])
def test_an_unknown_loss_hints_at_load_where_the_command_takes_it(command, tmp_path, capsys):
    assert main(command) == 2
    assert capsys.readouterr().err == f"harness {command[0]}: error: unknown loss 'mine'; {VALID}{HINT}\n"
    other = tmp_path / "other_loss.py"
    other.write_text(EXT_LOSS.replace("{name}", "other"))
    assert main([*command, "--load", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'other'" not in VALID and ", other, " in err, err
    assert err.endswith(f"; --load {other} registers no loss 'mine': pass --load MODULE for the module that "
                        f"registers it\n"), err


def test_an_unknown_loss_where_there_is_no_load_names_no_load(capsys):
    assert main(["bench-steps", "--only", "atss:mine"]) == 2
    assert capsys.readouterr().err == f"harness bench-steps: error: unknown loss 'mine'; {VALID}\n"


def test_check_loss_refuses_an_unknown_detector_before_any_check_runs(monkeypatch, capsys):
    from harness.detectors import detector_names
    from harness.losses import checks

    monkeypatch.setattr(checks, "run_loss_checks", lambda name: pytest.fail("the loss checks ran"))
    for extra in ([], ["--skip-detectors"]):
        assert main(["check-loss", "rs", "--detector", "atss", "--detector", "bogus", *extra]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == (f"harness check-loss: error: unknown detector 'bogus'; valid: "
                                     f"{', '.join(detector_names())}\n")


def test_usage_errors_exit_2_with_one_line(capsys):
    assert main(["losses", "--load", "/no/such/loss.py"]) == 2
    err = capsys.readouterr().err
    assert err == "harness losses: error: loss module file /no/such/loss.py does not exist\n"


def test_python_dash_m_and_no_command():
    r = subprocess.run([sys.executable, "-m", "harness"], capture_output=True, text=True)
    assert r.returncode == 2 and "COMMAND" in r.stdout
    r = subprocess.run([sys.executable, "-m", "harness", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


@pytest.mark.parametrize("argv, says", [
    (["run", "x.yaml", "--bogus"], "harness run: error: unrecognized arguments: --bogus (see harness run --help)"),
    (["run"], "harness run: error: the following arguments are required: spec (see harness run --help)"),
    (["run", "x.yaml", "--executor", "nope"], "harness run: error: argument --executor: invalid choice: 'nope' "
                                              "(choose from 'auto', 'slurm', 'local', 'debug') (see harness run --help)"),
    (["check-cell", "atss", "rs", "--seed", "x"],
     "harness check-cell: error: argument --seed: invalid int value: 'x' (see harness check-cell --help)"),
    (["data", "synthetic", "--kind", "x", "extra"],
     "harness data synthetic: error: argument --kind: invalid choice: 'x' (choose from 'coco', 'lvis') "
     "(see harness data synthetic --help)"),
    (["data", "check", "coco", "--bogus"],
     "harness data check: error: unrecognized arguments: --bogus (see harness data check --help)"),
    (["--bogus"], "harness: error: unrecognized arguments: --bogus (see harness --help)"),
])
def test_argparses_own_errors_are_one_line_naming_the_command_and_exit_2(argv, says, capsys):
    """An unknown flag, a missing argument or a bad value: one line on stderr (no usage block), exit 2,
    naming the (sub-)command whose flag it is, as the harness's other usage errors."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == "" and err == says + "\n", err


@pytest.mark.parametrize("body,shown", [("raise SystemExit(0)\n", "SystemExit: 0"),
                                        ("import sys\n\nsys.exit(3)\n", "SystemExit: 3")])
def test_a_load_module_that_exits_while_importing_is_an_import_error_not_an_exit(tmp_path, capsys, body, shown):
    """SystemExit raised by a loss module while importing must not end the command (exit 0 with every
    check "passed" unrun): it is a broken module like any other, one file:line line and exit 2."""
    module = tmp_path / "exitmod.py"
    module.write_text(body)
    line = body.count("\n")
    for command in (["losses"], ["check-loss", "rs"]):
        assert main([*command, "--load", str(module)]) == 2
        out, err = capsys.readouterr()
        assert err == f"harness {command[0]}: error: {module}:{line}: {shown}\n", err
    # a spec's loss_modules: the same code path, the same line
    from harness.experiments.spec import import_loss_modules

    with pytest.raises(ImportError) as exc:
        import_loss_modules(["exitmod.py"], str(tmp_path))
    assert str(exc.value) == f"loss module exitmod.py cannot be imported here: {module}:{line}: {shown}"
    spec = tmp_path / "exits.yaml"
    spec.write_text("name: exits\nloss_modules: [exitmod.py]\ndetectors: [atss]\nlosses: [focal]\n"
                    "launch: {executor: local}\n")
    assert main(["run", str(spec), "--dry-run", "--results", str(tmp_path / "results")]) == 2
    assert capsys.readouterr().err == (f"harness run: error: loss_modules: loss module exitmod.py cannot be "
                                       f"imported here: {module}:{line}: {shown}\n")
