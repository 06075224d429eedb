"""ChA-MAEViT: DCP masking invariants (hypothesis), model behaviour, interfaces and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import geovit.hub
from geovit.errors import CheckpointError, GeovitError
from geovit.models import create_model
from geovit.models.chamae_losses import patchify, token_diversification_loss, unpatchify
from geovit.models.chamae_masking import BOTH, CHANNEL, PATCH, STRATEGIES, DCPMasks, dynamic_channel_patch_masking
from geovit.models.chamaevit import ChAMAEViT, build, load_official
from geovit.models.layers import set_fused_attention

TINY = dict(img_size=16, patch_size=4, in_chans=5, num_classes=3, embed_dim=32, depth=2, num_heads=2,
            num_memory_tokens=2, decoder={"num_heads": 4}, proxy_loss_lambda=0.01, num_proxies=3, use_proxy_head=True)
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tiny() -> ChAMAEViT:
    torch.manual_seed(0)
    return ChAMAEViT(**TINY).eval()


def _padded_batch(sizes, c_pad=4, hw=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(sizes), c_pad, hw, hw)
    valid = torch.zeros(len(sizes), c_pad, dtype=torch.bool)
    ids = torch.zeros(len(sizes), c_pad, dtype=torch.long)
    for i, n in enumerate(sizes):
        x[i, :n] = torch.randn(n, hw, hw, generator=g)
        valid[i, :n] = True
        ids[i, :n] = torch.randperm(5, generator=g)[:n]
    return x, ids, valid


# ----------------------------------------------------------------------------- DCP masking
@FAST
@given(batch=st.integers(1, 4), channels=st.integers(1, 6), grid=st.integers(1, 4),
       ratio=st.floats(0.05, 0.95), strategy=st.sampled_from(STRATEGIES), at_least=st.booleans(),
       seed=st.integers(0, 2**16))
def test_dcp_regular_batch_invariants(batch, channels, grid, ratio, strategy, at_least, seed):
    torch.manual_seed(seed)
    P = grid * grid
    m = dynamic_channel_patch_masking(batch, channels, P, ratio, strategy, at_least)
    L = channels * P
    # ind_restore inverts a permutation of the L tokens
    assert torch.equal(m.ind_restore.sort(dim=1).values, torch.arange(L).expand(batch, L))
    # every token is either visible or to reconstruct (no padding here)
    assert not (m.mask & m.visibles).any() and (m.mask | m.visibles).all()
    # the encoder sees exactly the visible tokens
    for b in range(batch):
        assert set(m.tokens_to_keep[b].tolist()) == set(m.visibles[b].nonzero().flatten().tolist())
    vis = m.visibles.reshape(batch, channels, P).sum(dim=2)
    # channel masking hides the same channels in every sample and never all of them
    assert (m.channels_sampled == m.channels_sampled[:1]).all()
    assert m.channels_sampled[0].any()
    keep = int((1 - ratio) * P) if strategy != CHANNEL else P
    assert torch.equal(vis, m.channels_sampled.long() * keep)  # same count for every kept channel
    if strategy == PATCH:
        assert m.channels_sampled.all()
    if strategy != PATCH and at_least and channels > 1:
        assert not m.channels_sampled[0].all()


@FAST
@given(sizes=st.lists(st.integers(1, 5), min_size=1, max_size=4), grid=st.integers(1, 3),
       ratio=st.floats(0.05, 0.95), strategy=st.sampled_from(STRATEGIES), at_least=st.booleans(),
       seed=st.integers(0, 2**16))
def test_dcp_padded_batch_draws_per_sample_within_channel_mask(sizes, grid, ratio, strategy, at_least, seed):
    torch.manual_seed(seed)
    c_pad, P = max(sizes), grid * grid
    valid = torch.arange(c_pad)[None, :] < torch.tensor(sizes)[:, None]
    m = dynamic_channel_patch_masking(len(sizes), c_pad, P, ratio, strategy, at_least, valid)
    token_valid = valid.repeat_interleave(P, dim=1)
    assert not (m.mask & ~token_valid).any() and not (m.visibles & ~token_valid).any()
    assert not (m.channels_sampled & ~valid).any()
    keep = int((1 - ratio) * P) if strategy != CHANNEL else P
    for b, n in enumerate(sizes):
        real = m.tokens_to_keep[b][m.mae_patch_masks[b]]
        assert set(real.tolist()) == set(m.visibles[b].nonzero().flatten().tolist())
        assert int(m.mae_patch_masks[b].sum()) == int(m.channels_sampled[b].sum()) * keep
        assert (m.tokens_to_keep[b][~m.mae_patch_masks[b]] == 0).all()
        if strategy != PATCH and n >= 2:
            assert m.channels_sampled[b].any(), "a sample with >= 2 channels keeps at least one"
        if strategy != PATCH and at_least:
            assert int(m.channels_sampled[b].sum()) <= n - 1


@FAST
@given(channels=st.integers(1, 4), grid=st.integers(1, 4), p=st.sampled_from([1, 2, 4]))
def test_patchify_roundtrip(channels, grid, p):
    x = torch.randn(2, channels, grid * p, grid * p)
    tokens = patchify(x, p)
    assert tokens.shape == (2, channels * grid * grid, p * p)
    assert torch.equal(tokens[0, 0], x[0, 0, :p, :p].flatten())
    assert torch.equal(unpatchify(tokens, channels, grid * p, grid * p, p), x)


@FAST
@given(b=st.integers(1, 3), c=st.integers(1, 4), P=st.integers(2, 6), seed=st.integers(0, 999))
def test_token_diversification_equals_gram_definition(b, c, P, seed):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, c, P, 8, generator=g)
    rows = torch.rand(b, c * P, generator=g) < 0.6
    f = torch.nn.functional.normalize(tokens.reshape(b, c * P, 8), dim=-1).double()
    gram = f @ f.transpose(1, 2)
    label = torch.arange(c).repeat_interleave(P)
    same = (label[:, None] == label[None, :]) & ~torch.eye(c * P, dtype=torch.bool)
    r = rows[:, :, None].double()
    pos = (gram * same * r).sum((1, 2)) / ((same * r).sum((1, 2)) + 1e-6)
    neg = (gram * ~(label[:, None] == label[None, :]) * r).sum((1, 2)) / ((~(label[:, None] == label[None, :]) * r).sum((1, 2)) + 1e-6)
    want = (0.5 * pos + 2.0 * neg).mean()
    got = token_diversification_loss(tokens, rows, 0.5, 2.0)
    assert torch.allclose(got.double(), want, atol=1e-6)


# ----------------------------------------------------------------------------- model behaviour
def test_pretrain_step_structure_and_mask_roundtrip(tiny):
    torch.manual_seed(1)
    x = torch.randn(3, 5, 16, 16)
    labels = torch.tensor([0, 2, 1])
    tiny.dcp_p_patch, tiny.dcp_p_channel = 0.0, 0.0  # BOTH: never skipped
    try:
        out = tiny.pretrain_step(x, labels=labels)
    finally:
        tiny.dcp_p_patch, tiny.dcp_p_channel = 0.5, 0.5
    assert out["reconstruction"].shape == out["pixel_mask"].shape == x.shape
    assert out["pixel_mask"].dtype == torch.bool and out["pixel_mask"].any()
    assert torch.equal(out["pixel_mask"][:, :, ::4, ::4].flatten(1), out["masks"].mask)
    assert out["pred"].shape == (3, 5 * 16, 16) and out["logits"].shape == (3, 3)
    cfg = tiny.config
    total = (cfg["mae_lambda"] * out["loss_mae"] + cfg["cross_entropy_lambda"] * out["loss_ce"]
             + cfg["proxy_loss_lambda"] * out["loss_proxy"]
             + cfg["diverse_patch_token_weight"] * out["loss_token_diversity"]
             + cfg["diverse_channel_token_weight"] * out["loss_channel_diversity"])
    assert torch.allclose(out["loss"], total)
    assert torch.allclose(out["loss_mae"], 0.99 * out["loss_recon"] + 0.01 * out["loss_fourier"])
    assert out["loss_ce"] > 0 and out["loss_proxy"] > 0
    again = tiny.pretrain_step(x, labels=labels, masks=out["masks"])            # dataclass back in
    as_dict = tiny.pretrain_step(x, labels=labels, masks=out["masks"].as_dict())  # or a dict
    assert torch.equal(again["loss"], out["loss"]) and torch.equal(as_dict["reconstruction"], out["reconstruction"])
    no_labels = tiny.pretrain_step(x, masks=out["masks"])
    assert no_labels["loss_task"] == 0 and no_labels["loss"] < out["loss"]


def test_norm_pix_reconstruction_is_mapped_back_to_pixels(tiny):
    """A perfect norm-pix prediction becomes the input itself in ``reconstruction``."""
    x = torch.randn(1, 2, 16, 16)
    target = patchify(x, 4)
    mean, std = target.mean(-1, keepdim=True), (target.var(-1, keepdim=True) + 1e-6).sqrt()
    hook = tiny.decoder_pred.register_forward_hook(
        lambda m, a, o: torch.cat([o[:, :3], (target - mean) / std], dim=1))
    try:
        out = tiny.pretrain_step(x, channels=[1, 3], masks=tiny.sample_masks(1, 2, strategy=PATCH))
    finally:
        hook.remove()
    assert torch.allclose(out["reconstruction"], x, atol=1e-5)
    assert out["loss_recon"] < 1e-10


def test_channel_only_draw_hiding_nothing_skips_decoder(tiny):
    x = torch.randn(2, 3, 16, 16)
    masks = tiny.sample_masks(2, 3, strategy=CHANNEL)
    P, L = 16, 48
    keep_all = DCPMasks(CHANNEL, torch.arange(L).expand(2, L), torch.arange(L).expand(2, L),
                        torch.zeros(2, L, dtype=torch.bool), torch.ones(2, L, dtype=torch.bool),
                        torch.ones(2, 3, dtype=torch.bool))
    assert masks.tokens_to_keep.shape[1] % P == 0
    out = tiny.pretrain_step(x, channels=[0, 1, 2], masks=keep_all)
    assert out["decoder_skipped"] and out["pred"] is None and out["loss_mae"] == 0
    assert not out["pixel_mask"].any()


def test_padded_batch_tokens_match_unpadded_samples(tiny):
    """The key mask hides padded channels: real tokens equal those of the sample alone."""
    x, ids, valid = _padded_batch([2, 4, 3])
    with torch.no_grad():
        padded = tiny.forward_tokens(x, channels=ids, channel_mask=valid)
        for i, n in enumerate([2, 4, 3]):
            alone = tiny.forward_tokens(x[i:i + 1, :n], channels=ids[i, :n])
            e = tiny.num_extra_tokens
            assert torch.allclose(padded[i, : e + n * 16], alone[0], atol=1e-5)


def test_channel_permutation_leaves_feature_unchanged(tiny):
    x = torch.randn(2, 4, 16, 16)
    ids = torch.tensor([4, 0, 2, 1])
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        a = tiny.forward_features(x, channels=ids)
        b = tiny.forward_features(x[:, perm], channels=ids[perm])
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, tiny.forward_features(x, channels=ids[perm]), atol=1e-3)


def test_unused_channel_tokens_get_no_gradient():
    torch.manual_seed(0)
    model = ChAMAEViT(**TINY).train()
    out = model.pretrain_step(torch.randn(2, 2, 16, 16), channels=[0, 3], labels=torch.tensor([0, 1]),
                              masks=model.sample_masks(2, 2, strategy=PATCH))
    out["loss"].backward()
    grad = model.patch_embed.channel_embed.weight.grad  # (C, D)
    assert grad[[0, 3]].abs().sum() > 0 and grad[[1, 2, 4]].abs().sum() == 0
    assert model.decoder.mask_token.grad.abs().sum() > 0 and model.memory_tokens.grad.abs().sum() > 0


def test_fused_and_materialised_attention_agree(tiny):
    x, ids, valid = _padded_batch([3, 1])
    masks = tiny.sample_masks(2, 4, valid, strategy=BOTH)
    with torch.no_grad():
        fused = tiny.pretrain_step(x, channels=ids, channel_mask=valid, masks=masks)
        assert set_fused_attention(tiny, False) == 3
        try:
            plain = tiny.pretrain_step(x, channels=ids, channel_mask=valid, masks=masks)
        finally:
            set_fused_attention(tiny, True)
    assert torch.allclose(fused["loss"], plain["loss"], atol=1e-6)
    assert torch.allclose(fused["pred"], plain["pred"], atol=1e-5)


def test_config_roundtrip_and_converted_file(tiny, tmp_path):
    config = json.loads(json.dumps(tiny.config))
    clone = build(config)
    clone.load_state_dict(tiny.state_dict())
    x = torch.randn(2, 3, 16, 16)
    first = [0, 1, 2]
    with torch.no_grad():
        assert torch.equal(clone.eval()(x, first), tiny(x, first))
    geovit.hub.save_converted(tiny, "chamaevit", tiny.config, tmp_path / "m.safetensors")
    loaded = geovit.hub.load_converted(tmp_path / "m.safetensors", family="chamaevit")
    with torch.no_grad():
        assert torch.equal(loaded(x, channels=[4, 1, 0]), tiny(x, channels=[4, 1, 0]))
    official = load_official(tiny.state_dict(), {"num_heads": 2, "decoder": {"num_heads": 4}})
    assert official.config["in_chans"] == 5 and official.config["num_memory_tokens"] == 2
    with torch.no_grad():
        assert torch.allclose(official(x, first), tiny(x, first))


def test_registry_variants_and_official_parameter_counts():
    with torch.device("meta"):  # shapes only: no time spent on initialising 23M weights
        small8 = create_model("chamaevit_small_patch8")
        small16 = create_model("chamaevit_small_patch16")
        chammi = create_model("chamaevit_small_patch16_chammi")
    # parameter counts printed in the official So2Sat and JUMP-CP training logs
    assert sum(p.numel() for p in small8.parameters()) == 22_736_337
    assert sum(p.numel() for p in small16.parameters()) == 23_163_681
    assert small8.config["encoder_pooling"] == "cls_attn_pooling" and small8.config["num_memory_tokens"] == 8
    assert small8.config["decoder"]["dcp_mask_ratio"] == 0.25 and small8.config["decoder"]["dcp_p_patch"] == 0.0
    tiny = create_model("chamaevit_tiny_patch16", in_chans=4, num_classes=0, img_size=32, depth=2,
                        decoder={"depth": 2})
    assert tiny.config["decoder"]["depth"] == 2 and tiny.config["decoder"]["dcp_mask_ratio"] == 0.25
    with torch.no_grad():
        assert tiny.eval()(torch.randn(1, 4, 32, 32)).shape == (1, 192)  # fused feature, no head
    assert chammi.config["num_proxies"] == 14 and chammi.config["in_chans"] == 12


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, match", [
    (dict(channels=[0, 1, 5]), "outside the model's channel table"),
    (dict(channels=[0, -1, 2]), "outside the model's channel table"),
    (dict(channels=[0, 1]), r"channels: shape"),
    (dict(channels=[0.0, 1.0, 2.0]), "integer channel ids"),
    (dict(channels=[[0, 1, 2], [3, 1]]), "pad ragged"),
    (dict(channel_mask=torch.ones(2, 3)), "bool tensor"),
    (dict(channel_mask=torch.tensor([[True, True, True], [False, False, False]])), "at least one real channel"),
    (dict(channel_mask=torch.tensor([[True, True, False], [True, True, True]])), "disagrees with x"),
])
def test_bad_channel_arguments(tiny, kwargs, match):
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(GeovitError, match=match):
        tiny(x, **kwargs)


def test_bad_inputs_and_settings(tiny):
    with pytest.raises(GeovitError, match="in_chans=5"):
        tiny(torch.randn(1, 6, 16, 16))
    with pytest.raises(GeovitError, match="not divisible by patch_size"):
        tiny(torch.randn(1, 2, 18, 16))
    with pytest.raises(GeovitError, match="square"):
        tiny.pretrain_step(torch.randn(1, 2, 16, 8), channels=[0, 1])
    with pytest.raises(GeovitError, match=r"dcp_mask_ratio: 1.0 is outside \(0, 1\)"):
        ChAMAEViT(**{**TINY, "decoder": {"dcp_mask_ratio": 1.0}})
    with pytest.raises(GeovitError, match="dcp_p_patch"):
        ChAMAEViT(**{**TINY, "decoder": {"dcp_p_patch": 0.7, "dcp_p_channel": 0.6}})
    tiny.dcp_mask_ratio = 0.0
    try:
        with pytest.raises(GeovitError, match="outside"):
            tiny.pretrain_step(torch.randn(1, 2, 16, 16), channels=[0, 1])
    finally:
        tiny.dcp_mask_ratio = 0.75
    with pytest.raises(GeovitError, match="labels"):
        tiny.pretrain_step(torch.randn(2, 2, 16, 16), channels=[0, 1], labels=torch.tensor([0, 7]))
    with pytest.raises(GeovitError, match="unknown keys"):
        build({**TINY, "depht": 3})
    with pytest.raises(GeovitError, match="decoder.embed_dim"):
        ChAMAEViT(**{**TINY, "decoder": {"embed_dim": 16}})


def test_injected_masks_must_fit_the_batch(tiny):
    x = torch.randn(2, 3, 16, 16)
    masks = tiny.sample_masks(2, 3, strategy=PATCH)
    with pytest.raises(GeovitError, match="masks.ind_restore"):
        tiny.pretrain_step(torch.randn(2, 4, 16, 16), channels=[0, 1, 2, 3], masks=masks)
    _, ids, valid = _padded_batch([3, 2], c_pad=3)
    with pytest.raises(GeovitError, match="mae_patch_masks"):
        tiny.pretrain_step(x * valid[..., None, None], channels=ids, channel_mask=valid, masks=masks)
    with pytest.raises(GeovitError, match="missing keys"):
        tiny.pretrain_step(x, channels=[0, 1, 2], masks={"strategy": PATCH})


def test_foreign_checkpoints_are_rejected(tiny):
    channelvit_like = {"cls_token": torch.zeros(1, 1, 32), "pos_embed": torch.zeros(1, 17, 32),
                       "patch_embed.proj.weight": torch.zeros(32, 1, 1, 4, 4),
                       "patch_embed.channel_embed.weight": torch.zeros(5, 32)}
    with pytest.raises(CheckpointError, match="ChannelViT"):
        geovit.hub.load_official("chamaevit", channelvit_like, {})
    changevit_like = {"encoder.vit.pos_embed": torch.zeros(1, 256, 192), "encoder.vit.mask_token": torch.zeros(1, 192)}
    with pytest.raises(CheckpointError, match="not a ChA-MAEViT checkpoint"):
        geovit.hub.load_official("chamaevit", changevit_like, {})
    state = tiny.state_dict()
    with pytest.raises(CheckpointError, match="in_chans"):
        load_official(state, {"num_heads": 2, "in_chans": 7})
    with pytest.raises(CheckpointError, match="encoder_pooling"):
        load_official(state, {"num_heads": 2, "encoder_pooling": "cls_token"})
    broken = dict(state)
    broken.pop("norm.weight")
    with pytest.raises(CheckpointError, match="norm.weight"):
        load_official(broken, {"num_heads": 2, "decoder": {"num_heads": 4}})


def test_real_channelvit_checkpoint_is_rejected(conformance):
    path = conformance("channelvit").file("state_dict.pt")
    with pytest.raises(CheckpointError, match="ChA-MAEViT"):
        geovit.hub.load_official("chamaevit", path, {})


def test_numpy_seed_drives_strategy(tiny):
    draws = set()
    for seed in range(12):
        np.random.seed(seed)
        draws.add(tiny.sample_masks(1, 2).strategy)
    assert draws == {PATCH, CHANNEL}  # Alternate: 0.5 / 0.5, never both
