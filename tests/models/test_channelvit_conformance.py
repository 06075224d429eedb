"""geovit ChannelViT reproduces the official implementation's outputs (../shared/conformance/channelvit)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from geovit.hub import load_official

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def case(conformance):
    return conformance("channelvit")


@pytest.fixture(scope="module")
def model(case):
    heads = case.config["constructor_args"]["num_heads"]
    return load_official("channelvit", case.file("state_dict.pt"), {"num_heads": heads})


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
def test_logits_from_lightning_checkpoint(case):
    m = load_official("channelvit", case.file("lightning_style_ckpt.pt"), {"num_heads": 4})
    assert m.num_classes == case.io["logits_all"].shape[1]
    close(m(t(case.io["x"]), t(case.io["channels_all"])), case.io["logits_all"])
    sub = t(case.io["subset"])
    close(m(t(case.io["x"])[:, sub], sub), case.io["logits_subset"])


@torch.no_grad()
def test_dino_layout(case):
    m = load_official("channelvit", case.file("state_dict_nonhcs_layout.pt"), {"num_heads": 4})
    close(m(t(case.io["x"]), t(case.io["channels_all"])), case.io["out_all"])


@torch.no_grad()
def test_dino_teacher_student_prefixes(case):
    sd = torch.load(case.file("state_dict_nonhcs_layout.pt"), weights_only=True)
    wrapped = {"state_dict": {**{f"teacher.backbone.{k}": v for k, v in sd.items()},
                              **{f"student.backbone.{k}": torch.zeros_like(v) for k, v in sd.items()}}}
    m = load_official("channelvit", wrapped, {"num_heads": 4})
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
