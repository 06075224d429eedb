"""geovit ChannelViT reproduces the official implementation's outputs.

The golden data is the repository's copy (``tests/data/conformance/channelvit``) and, where the
official golden data sits beside the checkout (``../shared/conformance/channelvit``), that folder
too, read directly. Every case runs twice per source: through ``geovit.hub.load_official`` and through ``timm.create_model(...,
pretrained=True, pretrained_cfg_overlay=dict(file=...))`` (the architecture given as keyword
arguments, as a timm user does), at the same tolerance.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import timm
import torch

import geovit.models  # noqa: F401  (registers geovit's variants with timm)
from geovit.hub import load_official
from repo_paths import CONFORMANCE, SHARED_CONFORMANCE

TOL = dict(atol=1e-5, rtol=1e-5)
LOADERS = ("hub", "timm")


#: golden-data roots: the repository copy, and the official folder when present
SOURCES = [CONFORMANCE] + ([SHARED_CONFORMANCE] if (SHARED_CONFORMANCE / "channelvit").is_dir() else [])


@pytest.fixture(scope="module", params=SOURCES, ids=lambda root: "shared" if root == SHARED_CONFORMANCE else "repo")
def case(conformance, request):
    return conformance("channelvit", request.param)


def _load(loader, case, source, **extra):
    """The golden model from ``source`` (a file name of the case, or a state dict) by one loader."""
    args = case.config["constructor_args"]
    if loader == "hub":
        return load_official("channelvit", case.file(source) if isinstance(source, str) else source,
                             {"num_heads": args["num_heads"]})
    overlay = dict(file=str(case.file(source))) if isinstance(source, str) else dict(state_dict=source)
    arch = {k: args[k] for k in ("embed_dim", "depth", "num_heads")}
    return timm.create_model("channelvit_small_patch8", pretrained=True, pretrained_cfg_overlay=overlay,
                             **arch, **extra).eval()


@pytest.fixture(scope="module", params=LOADERS)
def loader(request):
    return request.param


@pytest.fixture(scope="module")
def model(case, loader):
    return _load(loader, case, "state_dict.pt")


def t(a):
    return torch.from_numpy(np.asarray(a))


def close(got, want):
    got = got.detach().numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, **TOL)


def test_config_inferred_from_tensors(model, case):
    args = case.config["constructor_args"]
    for key in ("patch_size", "in_chans", "embed_dim", "depth", "mlp_ratio", "qkv_bias", "num_classes"):
        assert model.config[key] == args[key], key
    assert model.config["img_size"] == args["img_size"][0]


@torch.no_grad()
def test_all_channels_and_tokens(model, case):
    io = case.io
    close(model(t(io["x"]), t(io["channels_all"])), io["out_all"])
    close(model.forward_features(t(io["x"]), t(io["channels_all"])), io["tokens_all"])
    close(model.get_intermediate_layers(t(io["x"]), t(io["channels_all"]), n=1)[0], io["tokens_all"])


@torch.no_grad()
def test_positional_table_is_resampled_even_at_native_size(model, case):
    got = model.pos_embed_for(18, 4, 4, 32, 32)[:, :17]
    close(got, case.io["pos_embed_used_all"])
    assert not torch.allclose(got, model.pos_embed, atol=1e-5)  # the quirk is real


@torch.no_grad()
@pytest.mark.parametrize("name", ["subset", "subset_permuted", "single"])
def test_channel_subsets(model, case, name):
    io = case.io
    ids = t(io[name])
    x = t(io["x"])[:, ids]
    close(model(x, ids), io[f"out_{name}"])
    if name == "subset":
        close(model.forward_features(x, ids), io["tokens_subset"])


@torch.no_grad()
def test_mixed_ids_per_sample(model, case):
    close(model(t(case.io["x_mixed"]), t(case.io["mixed_channels"])), case.io["out_mixed"])


@torch.no_grad()
def test_larger_input_resamples_positional_grid(model, case):
    x = t(case.io["x_extra_res"])
    close(model(x, torch.arange(18)[None]), case.io["out_all_extra_res"])


@torch.no_grad()
def test_logits_from_lightning_checkpoint(case, loader):
    m = _load(loader, case, "lightning_style_ckpt.pt")
    assert m.num_classes == case.io["logits_all"].shape[1]
    close(m(t(case.io["x"]), t(case.io["channels_all"])), case.io["logits_all"])
    sub = t(case.io["subset"])
    close(m(t(case.io["x"])[:, sub], sub), case.io["logits_subset"])


@torch.no_grad()
def test_dino_layout(case, loader):
    m = _load(loader, case, "state_dict_nonhcs_layout.pt")
    close(m(t(case.io["x"]), t(case.io["channels_all"])), case.io["out_all"])


@torch.no_grad()
def test_dino_teacher_student_prefixes(case, loader):
    sd = torch.load(case.file("state_dict_nonhcs_layout.pt"), weights_only=True)
    wrapped = {"state_dict": {**{f"teacher.backbone.{k}": v for k, v in sd.items()},
                              **{f"student.backbone.{k}": torch.zeros_like(v) for k, v in sd.items()}}}
    m = _load(loader, case, wrapped)
    close(m(t(case.io["x"]), t(case.io["channels_all"])), case.io["out_all"])


@torch.no_grad()
def test_hcs_training_draw(model, case):
    seed = int(case.io["hcs_train_python_seed"])
    model.train()
    try:
        model.hcs_rng = random.Random(seed)  # same stream as the official random.seed(seed)
        out = model(t(case.io["x"]), t(case.io["channels_all"]))
    finally:
        model.eval()
        model.hcs_rng = random
    assert model.last_hcs_draw == case.io["hcs_train_sampled_channels"].tolist()
    close(out, case.io["out_hcs_train"])


@torch.no_grad()
def test_bound_channels_reproduce_the_subset_outputs(case, loader):
    """A model bound to a band subset gives the official subset output from ``model(x)`` alone."""
    ids = t(case.io["subset_permuted"]).tolist()
    if loader == "timm":  # at creation, as a framework's config would
        bound = _load(loader, case, "state_dict.pt", default_channels=ids)
    else:  # on a loaded model
        bound = _load(loader, case, "state_dict.pt")
        assert bound.bind_channels(ids) == ids
    assert bound.default_channels == ids
    close(bound(t(case.io["x"])[:, ids]), case.io["out_subset_permuted"])
