"""The loss registry: the five built-in losses, the head contract, external registration."""

from __future__ import annotations

import textwrap

import pytest
import torch

from harness.losses import (
    LOSSES,
    ClassificationOutput,
    LossSpec,
    get_loss,
    load_loss_module,
    loss_names,
    register_loss,
)
from harness.losses import registry


@pytest.fixture
def clean_registry(monkeypatch):
    """Losses registered inside a test disappear after it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    yield registry._REGISTRY


def test_builtin_losses_are_registered():
    assert {"ce", "focal", "ap", "alrp", "rs"} <= set(loss_names())
    assert get_loss("rs").targets == "quality" and get_loss("rs").balancing == "value"
    assert get_loss("alrp").uses_loc_errors and get_loss("alrp").balancing == "self_balance"
    assert get_loss("focal").mmdet["type"] == "FocalLoss" and not get_loss("focal").ranking
    assert all(LOSSES[n].ranking for n in ("rs", "alrp", "ap"))


def test_unknown_loss_lists_the_valid_names():
    with pytest.raises(KeyError, match="unknown loss 'nope'; valid: alrp, ap, bucketed_ap, bucketed_rs, ce, focal, rs"):
        get_loss("nope")


@pytest.mark.parametrize("name", ["ce", "focal", "ap", "alrp", "rs"])
def test_every_spec_is_callable_through_the_head_contract(name):
    spec = get_loss(name)
    s = torch.randn(200, requires_grad=True)
    t = torch.zeros(200)
    t[:10] = torch.rand(10) * 0.9 + 0.1
    loc = torch.rand(10) if spec.uses_loc_errors else None
    out = spec.classification(s, t, loc_errors=loc)
    assert isinstance(out, ClassificationOutput)
    out.loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert all(not v.requires_grad for v in out.components.values())
    assert (out.ranks is not None) == spec.uses_loc_errors


def test_spec_options_are_checked():
    s, t = torch.randn(10), torch.zeros(10)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['gamma'\]; valid: \['delta'\]"):
        get_loss("rs").classification(s, t, gamma=2.0)
    with pytest.raises(TypeError, match="needs loc_errors"):
        get_loss("alrp").classification(s, t)
    out = get_loss("rs").classification(torch.randn(10), torch.tensor([0.5] + [0.0] * 9), delta=0.0)
    assert out.loss.item() >= 0


def test_duplicate_names_are_refused(clean_registry):
    spec = get_loss("rs")
    with pytest.raises(ValueError, match="'rs' is already registered .*harness.losses.rank_sort"):
        register_loss(spec)


def test_spec_fields_are_validated():
    base = dict(summary="x", fn=print, classify=print, ranking=False, balancing="fixed")
    with pytest.raises(ValueError, match="targets must be one of"):
        LossSpec(name="x", targets="soft", **base)
    with pytest.raises(ValueError, match="balancing must be one of"):
        LossSpec(name="x", targets="binary", **{**base, "balancing": "magic"})
    with pytest.raises(ValueError, match="name"):
        LossSpec(name="has space", targets="binary", **base)


def test_external_module_registers_by_path(clean_registry, tmp_path):
    path = tmp_path / "my_loss.py"
    path.write_text(textwrap.dedent('''
        import torch.nn.functional as F
        from harness.losses import ClassificationOutput, LossSpec, register_loss

        def squared_hinge(logits, targets):
            valid = targets >= 0
            sign = (targets > 0).float() * 2 - 1
            return (F.relu(1 - sign * logits)[valid] ** 2).sum() / (targets > 0).sum().clamp(min=1)

        def classify(logits, targets, loc_errors=None):
            loss = squared_hinge(logits, targets)
            return ClassificationOutput(loss=loss, components={"hinge": loss.detach()})

        register_loss(LossSpec(name="hinge", summary="squared hinge", fn=squared_hinge, classify=classify,
                               targets="binary", ranking=False, balancing="fixed", module=__name__))
    '''))
    assert load_loss_module(str(path)) == ["hinge"]
    assert load_loss_module(str(path)) == []  # a second import is a no-op
    out = get_loss("hinge").classification(torch.tensor([2.0, -2.0, 0.0]), torch.tensor([1.0, 0.0, 1.0]))
    assert out.loss.item() == pytest.approx(0.5)


def test_external_module_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_loss_module(str(tmp_path / "missing.py"))
    with pytest.raises(ModuleNotFoundError, match="cannot be imported"):
        load_loss_module("no_such_package.losses")


def test_a_new_file_in_the_package_is_discovered(clean_registry, tmp_path, monkeypatch):
    """harness.losses imports every module of its package: a new loss is one new file there."""
    import sys

    import harness.losses as pkg

    (tmp_path / "my_new_loss.py").write_text(textwrap.dedent('''
        from harness.losses import ClassificationOutput, LossSpec, cross_entropy_loss, register_loss

        def classify(logits, targets, loc_errors=None):
            loss = 2 * cross_entropy_loss(logits, targets)
            return ClassificationOutput(loss=loss, components={"ce2": loss.detach()})

        register_loss(LossSpec(name="ce2", summary="twice CE", fn=cross_entropy_loss, classify=classify,
                               targets="binary", ranking=False, balancing="fixed", module=__name__))
    '''))
    monkeypatch.setattr(pkg, "__path__", [*pkg.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "harness.losses.my_new_loss", raising=False)
    pkg._discover()
    assert get_loss("ce2").module == "harness.losses.my_new_loss"
    sys.modules.pop("harness.losses.my_new_loss", None)
