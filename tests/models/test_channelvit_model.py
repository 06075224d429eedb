"""ChannelViT behaviour: channel-set invariances, HCS, registry, errors."""
from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geovit.errors import CheckpointError, GeovitError
from geovit.hub import load_converted, load_official, save_converted
from geovit.models import create_model, list_models
from geovit.models.channelvit import ChannelViT


def tiny(**kw):
    cfg = dict(img_size=32, patch_size=8, in_chans=6, embed_dim=24, depth=1, num_heads=2)
    cfg.update(kw)
    torch.manual_seed(0)
    return ChannelViT(**cfg).eval()


def test_registry_variants():
    names = list_models("channelvit_*")
    for size, patch in itertools.product(("tiny", "small", "base"), (8, 16)):
        assert f"channelvit_{size}_patch{patch}" in names
    m = create_model("channelvit_small_patch8", in_chans=18, depth=1)
    assert (m.embed_dim, m.patch_size, m.in_chans) == (384, 8, 18)
    assert m.patch_embed.proj.weight.shape == (384, 1, 1, 8, 8)


@settings(max_examples=15, deadline=None)
@given(perm_seed=st.integers(0, 10_000), k=st.integers(2, 6))
def test_output_invariant_to_channel_order(perm_seed, k):
    """Channel order is a permutation of token blocks: the CLS output must not change."""
    model = tiny()
    g = torch.Generator().manual_seed(perm_seed)
    ids = torch.randperm(6, generator=g)[:k]
    x = torch.randn(2, k, 32, 32, generator=g)
    perm = torch.randperm(k, generator=g)
    with torch.no_grad():
        a = model(x, ids)
        b = model(x[:, perm], ids[perm])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_per_sample_ids_equal_separate_forwards():
    model = tiny()
    x = torch.randn(2, 3, 32, 32)
    ids = torch.tensor([[0, 1, 2], [5, 3, 4]])
    with torch.no_grad():
        both = model(x, ids)
        each = torch.cat([model(x[i : i + 1], ids[i]) for i in range(2)])
    torch.testing.assert_close(both, each, atol=1e-5, rtol=1e-5)


def test_channel_identity_matters():
    """Same pixels under different channel ids give different features (the embedding is used)."""
    model = tiny()
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(model(x, torch.tensor([0, 1])), model(x, torch.tensor([2, 3])))


def test_hcs_train_forward_equals_eval_on_drawn_subset():
    model = tiny(hcs_seed=3)
    x, ids = torch.randn(2, 6, 32, 32), torch.arange(6)
    model.train()
    with torch.no_grad():
        out = model(x, ids)
    sel = model.last_hcs_draw
    model.eval()
    with torch.no_grad():
        ref = model(x[:, sel], ids[sel])
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)


def test_hcs_deterministic_given_seed_and_switchable():
    draws = []
    for _ in range(2):
        m = tiny(hcs_seed=11).train()
        seq = []
        for _ in range(5):
            m(torch.randn(1, 6, 32, 32))
            seq.append(tuple(m.last_hcs_draw))
        draws.append(seq)
    assert draws[0] == draws[1]
    off = tiny(hcs=False).train()
    off(torch.randn(1, 6, 32, 32))
    assert off.last_hcs_draw is None


def test_hcs_subset_size_is_uniform():
    """Paper §3.2: every subset size 1..C equally likely (unlike channel dropout's Binomial)."""
    m = tiny(hcs_seed=0)
    counts = Counter(len(m.sample_channels(6)) for _ in range(6000))
    assert set(counts) == set(range(1, 7))
    for size in range(1, 7):
        assert abs(counts[size] / 6000 - 1 / 6) < 0.03
    draws = [m.sample_channels(6) for _ in range(200)]
    assert all(len(set(d)) == len(d) for d in draws)  # distinct channels


@pytest.mark.parametrize(
    "x_shape, ids, match",
    [
        ((1, 3, 32, 32), torch.tensor([0, 1, 6]), "outside the model's channel table"),
        ((1, 3, 32, 32), torch.tensor([0, 1]), "expected"),
        ((1, 7, 32, 32), None, "channel table has 6"),
        ((1, 2, 30, 32), torch.tensor([0, 1]), "multiple of the patch size"),
        ((2, 32, 32), None, r"\(B, k, H, W\)"),
        ((1, 2, 32, 32), torch.tensor([0.0, 1.0]), "integer"),
    ],
)
def test_bad_input_errors(x_shape, ids, match):
    with pytest.raises(GeovitError, match=match):
        tiny()(torch.randn(*x_shape), ids)


def test_foreign_checkpoint_rejected():
    with pytest.raises(CheckpointError, match="not a ChannelViT"):
        load_official("channelvit", {"encoder.weight": torch.zeros(2, 2)})
    sd = tiny(embed_dim=40, num_heads=2).state_dict()
    with pytest.raises(CheckpointError, match="num_heads"):
        load_official("channelvit", sd)  # width 40 has no official head count
    assert load_official("channelvit", sd, {"num_heads": 2}).embed_dim == 40


def test_safetensors_round_trip(tmp_path):
    model = tiny(num_classes=4)
    path = tmp_path / "m.safetensors"
    save_converted(model, "channelvit", model.config, path)
    again = load_converted(path, family="channelvit")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x, torch.tensor([0, 2, 4])), again(x, torch.tensor([0, 2, 4])))
    with pytest.raises(CheckpointError, match="expected 'changevit'"):
        load_converted(path, family="changevit")


def test_hcs_rng_independent_of_global_random_when_seeded():
    m = tiny(hcs_seed=5).train()
    random.seed(0)
    m(torch.randn(1, 6, 32, 32))
    first = m.last_hcs_draw
    m2 = tiny(hcs_seed=5).train()
    random.seed(123)
    m2(torch.randn(1, 6, 32, 32))
    assert m2.last_hcs_draw == first


def test_corrupt_safetensors_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_converted(bad)
