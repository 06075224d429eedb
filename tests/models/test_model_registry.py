"""The model registry and the one family table."""
from __future__ import annotations

import json
import types
import warnings
from pathlib import Path

import pytest
import torch

import geovit.hub
from geovit.errors import CheckpointError, GeovitError
from geovit.models import _registry, create_model, families, is_model, list_models, model_family, register_model
from geovit.models.chamaevit import ChAMAEViT

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry that the test may change."""
    list_models()  # families imported first, so the copy holds every model
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))


def test_duplicate_registration_warns_naming_the_model(scratch_registry):
    def channelvit_tiny_patch8(**kwargs):
        return torch.nn.Identity()

    with pytest.warns(UserWarning, match=r"'channelvit_tiny_patch8' is already registered by geovit\.models\.channelvit"):
        register_model(channelvit_tiny_patch8)
    assert isinstance(create_model("channelvit_tiny_patch8"), torch.nn.Identity)  # the new one replaces it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_model(channelvit_tiny_patch8)  # the same function again: no warning


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(GeovitError, match=r"unknown model 'channelvit_tiny_patch4' \(did you mean "
                                          r"'channelvit_tiny_patch8'\?\); expected one of: .*vicon"):
        create_model("channelvit_tiny_patch4")
    assert is_model("vicon") and not is_model("channelvit_tiny_patch4")
    assert list_models("changevit_*") == ["changevit_small", "changevit_tiny"]
    assert model_family("chamaevit_small_patch16_chammi") == "chamaevit" and model_family("vicon") == "vicon"
    with pytest.raises(GeovitError, match="unknown model 'nope'"):
        model_family("nope")


def test_family_table_holds_geovit_families_and_the_entry_point():
    assert dict(families.FAMILIES) == {**families.BUILTIN_FAMILIES, "vicon": "pdes.vicon"}
    assert geovit.hub.FAMILIES is families.FAMILIES
    assert families.family_module("vicon").__name__ == "pdes.vicon"
    # geovit finds VICON through the entry point only: no geovit source names its module
    named = [str(p.relative_to(REPO)) for p in (REPO / "geovit").rglob("*.py") if "pdes.vicon" in p.read_text()]
    assert named == []


@pytest.mark.parametrize("family", sorted(families.FAMILIES))
def test_every_family_module_fulfils_the_contract(family):
    module = families.family_module(family)
    assert all(callable(getattr(module, name)) for name in families.CONTRACT)


def test_unknown_family_is_a_clear_error(tmp_path):
    known = "channelvit, chamaevit, changevit, vicon"
    with pytest.raises(GeovitError, match=f"unknown model family 'nope'; expected one of {known}"):
        families.family_module("nope")
    with pytest.raises(GeovitError, match="unknown model family 'nope'"):
        geovit.hub.load_official("nope", {})
    with pytest.raises(GeovitError, match="unknown model family 'nope'"):
        geovit.hub.save_converted(torch.nn.Linear(1, 1), "nope", {}, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_plugin_families_are_checked(monkeypatch):
    """A plugin module without the contract is refused by name; an uninstalled one is skipped."""
    table = {**families.FAMILIES, "bare": "bare_plugin", "ghost": "ghost_plugin"}
    plugins = {"vicon": families.family_module("vicon"), "bare": types.ModuleType("bare_plugin")}
    monkeypatch.setattr(families.FAMILIES, "_table", table)
    monkeypatch.setattr(families, "load_entry_points", lambda group: plugins)
    with pytest.raises(GeovitError, match=r"family 'bare' \(bare_plugin\) lacks checkpoint_filter_fn, infer_config, "
                                          "build, load_official"):
        families.family_module("bare")
    with pytest.raises(GeovitError, match=r"'ghost' is declared by an entry point \(ghost_plugin\) but its package "
                                          "is not installed"):
        families.family_module("ghost")
    with pytest.raises(GeovitError, match="family 'bare'"):
        families.import_families()  # what the registry runs: it refuses the bare module ...
    del table["bare"], plugins["bare"]
    families.import_families()  # ... and skips the uninstalled one


def test_converted_file_of_the_former_chamaevit_layout_loads(tmp_path):
    """Files written while ChA-MAEViT stored ``patch_embed.channel_tokens`` (1, D, C, 1, 1) still load."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = ChAMAEViT(img_size=16, patch_size=4, in_chans=5, embed_dim=16, depth=1, num_heads=2,
                      num_memory_tokens=0, encoder_pooling="cls_token", mae_lambda=0.0, init_values=None,
                      diverse_channel_token_weight=0.0).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    table = state.pop("patch_embed.channel_embed.weight")
    state["patch_embed.channel_tokens"] = table.t()[None, :, :, None, None].contiguous()
    path = tmp_path / "old.safetensors"
    save_file(state, str(path), metadata={"family": "chamaevit", "config": json.dumps(model.config),
                                          "format": "geovit"})
    again = geovit.hub.load_converted(path, family="chamaevit")
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(again(x, channels=[4, 0, 2]), model(x, channels=[4, 0, 2]))
    # the same minimal tensors without a model to tell them apart are taken for a ChannelViT's
    geovit_keys = model.state_dict()
    with pytest.raises(CheckpointError, match="ChannelViT"):
        geovit.hub.load_official("chamaevit", geovit_keys, {"num_heads": 2})
