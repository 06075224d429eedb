"""ChA-MAEViT reference options: CA-MAE per-channel decoder, self image norm, channel sampling (HCS)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geovit.errors import GeovitError
from geovit.models.chamae_masking import BOTH, PATCH
from geovit.models.chamaevit import (
    ChAMAEViT,
    infer_config,
    load_official,
    self_image_norm,
)
from geovit.models.channel_sampling import hcs_draw
from geovit.tasks.base import seed_step

D = 32
TINY = dict(img_size=16, patch_size=4, in_chans=5, num_classes=3, embed_dim=D, depth=2, num_heads=2,
            num_memory_tokens=2, decoder={"num_heads": 4})
CAMAE = {**TINY, "decoder": {"num_heads": 4, "depth": 2, "decoder_type": "camae_decoder"}}
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _model(**overrides) -> ChAMAEViT:
    torch.manual_seed(0)
    return ChAMAEViT(**{**TINY, **overrides})


@pytest.fixture(scope="module")
def camae() -> ChAMAEViT:
    torch.manual_seed(0)
    return ChAMAEViT(**CAMAE)


# ----------------------------------------------------------------------------- per-channel decoder
def test_camae_decoder_parameter_layout_is_the_references(camae):
    shapes = {k: tuple(v.shape) for k, v in camae.state_dict().items() if k.startswith("decoder.")}
    expected = {"decoder.mask_token": (1, 1, D), "decoder.placeholder": (1, 1, D),
                "decoder.cross_attention.q.weight": (D, D), "decoder.cross_attention.kv.weight": (2 * D, D),
                "decoder.cross_attention.proj.weight": (D, D), "decoder.cross_attention.proj.bias": (D,),
                "decoder.mlp.fc1.weight": (4 * D, D), "decoder.mlp.fc1.bias": (4 * D,),
                "decoder.mlp.fc2.weight": (D, 4 * D), "decoder.mlp.fc2.bias": (D,)}
    for norm in ("context_norm", "query_norm", "out_norm"):
        expected.update({f"decoder.{norm}.weight": (D,), f"decoder.{norm}.bias": (D,)})
    for c in range(5):  # one modality token and one 2-block decoder per channel id of the table
        expected[f"decoder.modality_tokens.{c}"] = (1, 1, D)
        for j in range(2):
            pre = f"decoder.decoders.{c}.{j}."
            expected.update({pre + "norm1.weight": (D,), pre + "norm1.bias": (D,), pre + "attn.qkv.weight": (3 * D, D),
                             pre + "attn.proj.weight": (D, D), pre + "attn.proj.bias": (D,), pre + "norm2.weight": (D,),
                             pre + "norm2.bias": (D,), pre + "mlp.fc1.weight": (4 * D, D), pre + "mlp.fc1.bias": (4 * D,),
                             pre + "mlp.fc2.weight": (D, 4 * D), pre + "mlp.fc2.bias": (D,)})
    assert shapes == expected  # no qkv bias (decoder qkv_bias False), no LayerScale, no final decoder.norm
    assert "decoder_pred.weight" in camae.state_dict() and "encoder_decoder_proj.weight" in camae.state_dict()
    assert not camae.decoder.placeholder.requires_grad and not camae.decoder.placeholder.any()


def test_camae_checkpoint_rebuilds_from_its_tensors(camae):
    cfg = infer_config(camae.state_dict(), {"num_heads": 2, "decoder": {"num_heads": 4}})
    assert cfg["decoder"]["decoder_type"] == "camae_decoder" and cfg["decoder"]["depth"] == 2
    assert cfg["decoder"]["qkv_bias"] is False
    clone = load_official(camae.state_dict(), {"num_heads": 2, "decoder": {"num_heads": 4}})
    x, masks = torch.randn(2, 5, 16, 16), camae.sample_masks(2, 5, strategy=BOTH)
    a, b = camae.pretrain_step(x, masks=masks), clone.pretrain_step(x, masks=masks)
    assert torch.equal(a["pred"], b["pred"])
    with pytest.raises(Exception, match="decoder_type"):
        load_official(camae.state_dict(), {"num_heads": 2, "decoder": {"num_heads": 4, "decoder_type": "chamaevit_decoder"}})


def _decode(model, x, ids, valid, masks):
    """Decoder tokens of the patches (B, L, D) for the given masks (hook on the decoder)."""
    seen = {}
    handle = model.decoder.register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    try:
        model.pretrain_step(x, channels=ids, channel_mask=valid, masks=masks)
    finally:
        handle.remove()
    return seen["out"][:, model.num_extra_tokens:]


def test_each_channel_runs_through_the_decoder_of_its_id(camae):
    torch.manual_seed(1)
    x, ids = torch.randn(2, 3, 16, 16), torch.tensor([4, 0, 2])
    masks = camae.sample_masks(2, 3, strategy=PATCH)
    before = _decode(camae, x, ids, None, masks).detach()
    P = camae.num_patches_per_channel
    for position, cid in ((1, 0), (0, 4)):
        saved = camae.decoder.decoders[cid][1].mlp.fc2.bias.detach().clone()
        with torch.no_grad():
            camae.decoder.decoders[cid][1].mlp.fc2.bias.add_(1.0)
        after = _decode(camae, x, ids, None, masks).detach()
        with torch.no_grad():
            camae.decoder.decoders[cid][1].mlp.fc2.bias.copy_(saved)
        changed = (after - before).abs().amax(dim=(0, 2)) > 1e-6  # per token position
        expect = torch.zeros(3 * P, dtype=torch.bool)
        expect[position * P:(position + 1) * P] = True
        assert torch.equal(changed, expect)
    # a decoder of an id not present changes nothing
    with torch.no_grad():
        camae.decoder.decoders[3][0].mlp.fc2.bias.add_(1.0)
    try:
        assert torch.equal(_decode(camae, x, ids, None, masks), before)
    finally:
        with torch.no_grad():
            camae.decoder.decoders[3][0].mlp.fc2.bias.sub_(1.0)


@pytest.mark.parametrize("rows", [([2, 4, 1], [0, 3, 1]), ([2, 4, 1], [0, 3])])
def test_camae_padded_batch_decodes_each_sample_as_alone(camae, rows):
    """Per-sample ids (grouped by id) give what each sample gives alone. A sample with fewer
    visible tokens than the widest is compared on its padding only: as in the reference, some of
    its hidden positions receive the encoder outputs of the padding rows (spec §5.2 quirk)."""
    torch.manual_seed(2)
    sizes = [len(r) for r in rows]
    x = torch.zeros(2, 3, 16, 16)
    valid = torch.zeros(2, 3, dtype=torch.bool)
    ids = torch.zeros(2, 3, dtype=torch.long)
    for i, (n, r) in enumerate(zip(sizes, rows)):
        x[i, :n] = torch.randn(n, 16, 16)
        valid[i, :n] = True
        ids[i, :n] = torch.tensor(r)
    masks = camae.sample_masks(2, 3, valid, strategy=PATCH)
    both = _decode(camae, x, ids, valid, masks)
    P = camae.num_patches_per_channel
    for i, n in enumerate(sizes):
        assert not both[i, n * P:].any()  # padded slots output the (zero) placeholder
        if n < max(sizes):
            continue
        keep = masks.visibles[i, :n * P]  # the same sample alone, with the same hidden patches
        shuffled = torch.argsort((~keep).float(), stable=True)
        alone_masks = {"strategy": PATCH, "tokens_to_keep": shuffled[None, :int(keep.sum())],
                       "ind_restore": torch.argsort(shuffled)[None], "mask": ~keep[None], "visibles": keep[None],
                       "channels_sampled": torch.ones(1, n, dtype=torch.bool), "mae_patch_masks": None}
        alone = _decode(camae, x[i:i + 1, :n], ids[i, :n], None, alone_masks)
        torch.testing.assert_close(both[i, :n * P], alone[0], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- self image norm
@FAST
@given(b=st.integers(1, 3), c=st.integers(1, 4), hw=st.sampled_from([4, 8]), scale=st.floats(0.01, 1e3),
       shift=st.floats(-1e3, 1e3), seed=st.integers(0, 2**16))
def test_self_image_norm_standardises_each_image_and_channel_over_its_pixels(b, c, hw, scale, shift, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, hw, hw, generator=g, dtype=torch.float64) * scale + shift
    z, mean, std = self_image_norm(x)
    var = x.var(dim=(2, 3), unbiased=False)
    torch.testing.assert_close(z.mean(dim=(2, 3)), torch.zeros(b, c, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(z.var(dim=(2, 3), unbiased=False), var / (var + 1e-5), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(z * std + mean, x)
    assert torch.equal(self_image_norm(torch.zeros(1, 2, 4, 4))[0], torch.zeros(1, 2, 4, 4))  # padding stays 0


def test_self_normalised_reconstruction_loss_by_hand():
    model = _model(use_self_image_norm=True, mae_loss_norm=None, mae_recon_fourier_lambda=0.0)
    torch.manual_seed(3)
    x = torch.rand(1, 2, 16, 16) * torch.tensor([300.0, 0.01])[None, :, None, None] + 5.0
    masks = model.sample_masks(1, 2, strategy=PATCH)
    out = model.pretrain_step(x, channels=[0, 1], masks=masks)
    xs = x.double().numpy()[0]
    z = (xs - xs.mean(axis=(1, 2), keepdims=True)) / np.sqrt(xs.var(axis=(1, 2), keepdims=True) + 1e-5)
    target = z.reshape(2, 4, 4, 4, 4).transpose(0, 1, 3, 2, 4).reshape(32, 16)  # channel-major patches
    pred = out["pred"][0].detach().double().numpy()
    hidden = masks.mask[0].numpy()
    by_hand = ((pred - target) ** 2).mean(axis=1)[hidden].mean()
    assert abs(out["loss_recon"].item() - by_hand) < 1e-6
    assert abs(out["loss_mae"].item() - by_hand) < 1e-6  # no Fourier term here
    # the shown reconstruction is in the input's pixel space again
    shown = out["reconstruction"][0].detach().double().numpy()
    back = pred.reshape(2, 4, 4, 4, 4).transpose(0, 1, 3, 2, 4).reshape(2, 16, 16)
    back = back * np.sqrt(xs.var(axis=(1, 2), keepdims=True) + 1e-5) + xs.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(shown, back, rtol=1e-5, atol=1e-4)


def test_self_image_norm_makes_the_features_blind_to_per_channel_gain_and_offset():
    model = _model(use_self_image_norm=True).eval()
    x = torch.randn(2, 5, 16, 16)
    gain, offset = torch.tensor([1.0, 10.0, 0.5, 3.0, 100.0]), torch.tensor([0.0, -4.0, 2.0, 7.0, 50.0])
    y = x * gain[None, :, None, None] + offset[None, :, None, None]
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(y), model.forward_features(x), atol=1e-4, rtol=1e-4)
        plain = _model().eval()
        a, b = plain.forward_features(y), plain.forward_features(x)
        assert (a - b).abs().max() > 0.1 * b.abs().max()


# ----------------------------------------------------------------------------- channel sampling
@FAST
@given(k=st.integers(1, 12), low=st.integers(1, 14), extra=st.none() | st.integers(0, 6), seed=st.integers(0, 2**16))
def test_hcs_draw_keeps_the_count_bounds_and_is_seeded(k, low, extra, seed):
    high = None if extra is None else low + extra
    draw = hcs_draw(k, random.Random(seed), low, high)
    lo, hi = min(low, k), min(k if high is None else high, k)
    assert min(lo, hi) <= len(draw) <= hi
    assert len(set(draw)) == len(draw) and all(0 <= d < k for d in draw)
    assert draw == hcs_draw(k, random.Random(seed), low, high)


def test_hcs_draw_is_channelvits_draw():
    from geovit.models.channelvit import ChannelViT

    vit = ChannelViT(img_size=16, patch_size=8, in_chans=6, embed_dim=16, depth=1, num_heads=2, hcs_seed=7)
    ours = random.Random(7)
    assert [vit.sample_channels(6) for _ in range(20)] == [hcs_draw(6, ours) for _ in range(20)]


def test_channel_sampling_in_pretrain_step_is_bounded_and_replays_from_the_step_seed():
    model = _model(channel_sampling="hcs", channel_sampling_min=2, channel_sampling_max=3)
    x = torch.randn(3, 5, 16, 16)
    counts = set()
    for step in range(12):
        seed_step(5, step)
        first = model.pretrain_step(x)
        seed_step(5, step)  # what a resumed run does before the same step
        again = model.pretrain_step(x)
        assert torch.equal(first["channels_drawn"], again["channels_drawn"])
        assert torch.equal(first["loss"], again["loss"])
        drawn = first["channels_drawn"]
        assert (drawn == drawn[:1]).all()  # regular batch: one draw for the whole batch
        counts.add(int(drawn[0].sum()))
        assert not first["pixel_mask"][~drawn].any()  # channels not drawn are neither hidden nor shown
        assert not first["reconstruction"][~drawn].any()
    assert counts <= {2, 3} and len(counts) == 2


def test_channel_sampling_draws_per_sample_in_a_padded_batch():
    model = _model(channel_sampling="hcs")
    x = torch.zeros(4, 4, 16, 16)
    valid = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    x[valid] = torch.randn(int(valid.sum()), 16, 16)
    ids = torch.tensor([[0, 1, 2, 3], [4, 2, 0, 0], [3, 0, 0, 0], [1, 0, 4, 0]])
    rows = set()
    for step in range(10):
        seed_step(0, step)
        drawn = model.pretrain_step(x, channels=ids, channel_mask=valid)["channels_drawn"]
        assert not (drawn & ~valid).any() and drawn.any(dim=1).all()  # only real channels, at least one
        rows.add(tuple(map(tuple, drawn.tolist())))
    assert len(rows) > 1


# ----------------------------------------------------------------------------- each option changes the loss
def _loss(model, x, labels, masks=None, seed=None):
    if seed is not None:
        seed_step(seed, 0)
    return model.pretrain_step(x, masks=masks, labels=labels)["loss"].item()


def test_each_option_changes_the_loss_and_defaults_do_not():
    torch.manual_seed(4)
    x, labels = torch.randn(3, 5, 16, 16) * 3 + 1, torch.tensor([0, 1, 2])
    base = _model()
    masks = base.sample_masks(3, 5, strategy=BOTH)
    reference = _loss(base, x, labels, masks)
    same = _model(use_self_image_norm=False, channel_sampling=None, decoder={"num_heads": 4,
                                                                          "decoder_type": "chamaevit_decoder"})
    assert _loss(same, x, labels, masks) == reference
    # the per-patch norm-pix target hardly changes under a per-image standardisation, so compare
    # raw-pixel targets with self-normalised ones (CA-MAE's target)
    raw = _model(mae_loss_norm=None)
    norm = _model(use_self_image_norm=True, mae_loss_norm=None)
    norm.load_state_dict(raw.state_dict())
    assert abs(_loss(norm, x, labels, masks) - _loss(raw, x, labels, masks)) > 1e-2
    camae = _model(decoder={"num_heads": 4, "decoder_type": "camae_decoder"})
    camae.load_state_dict(base.state_dict(), strict=False)  # same encoder, its own decoder
    assert abs(_loss(camae, x, labels, masks) - reference) > 1e-4
    sampled = _model(channel_sampling="hcs", channel_sampling_max=2)
    sampled.load_state_dict(base.state_dict())
    assert abs(_loss(sampled, x, labels, seed=0) - _loss(base, x, labels, seed=0)) > 1e-4


@pytest.mark.parametrize("kwargs, match", [
    (dict(decoder={"decoder_type": "separate"}), "decoder_type"),
    (dict(channel_sampling="dcs"), "channel_sampling"),
    (dict(channel_sampling="hcs", channel_sampling_min=0), "channel_sampling_min"),
    (dict(channel_sampling="hcs", channel_sampling_min=3, channel_sampling_max=2), "channel_sampling_max"),
    (dict(use_self_image_norm="yes"), "use_self_image_norm"),
    (dict(embed_dim=36, num_heads=2, decoder={"decoder_type": "camae_decoder", "num_heads": 4}), "divisible by 8"),
])
def test_bad_option_values_are_named(kwargs, match):
    with pytest.raises(GeovitError, match=match):
        ChAMAEViT(**{**TINY, **kwargs})


def test_pretrain_config_options_reach_the_model():
    from geovit.cli.pretrain import model_kwargs_for
    from geovit.config import ConfigError, PretrainConfig

    cfg = PretrainConfig.from_dict({"decoder_type": "camae_decoder", "use_self_image_norm": True,
                                    "channel_sampling": "hcs", "channel_sampling_min": 2, "model_kwargs": {"depth": 1}})
    kwargs = model_kwargs_for(cfg, 18, 32, 17)
    assert kwargs["decoder"]["decoder_type"] == "camae_decoder" and kwargs["use_self_image_norm"] is True
    assert kwargs["channel_sampling"] == "hcs" and kwargs["channel_sampling_min"] == 2
    assert PretrainConfig.from_yaml(cfg.to_yaml()) == cfg
    default = model_kwargs_for(PretrainConfig.from_dict({}), 18, 32, 17)
    assert not {"use_self_image_norm", "channel_sampling", "decoder"} & set(default)  # today's behaviour
    assert model_kwargs_for(PretrainConfig.from_dict({"channel_sampling": "none"}), 18, 32, 17)["channel_sampling"] is None
    for bad, key in (({"decoder_type": "x"}, "decoder_type"), ({"channel_sampling_min": 2}, "channel_sampling_min"),
                     ({"channel_sampling": "hcs", "channel_sampling_min": 4, "channel_sampling_max": 3},
                      "channel_sampling_max"), ({"use_self_image_norm": "maybe"}, "use_self_image_norm")):
        with pytest.raises(ConfigError) as err:
            PretrainConfig.from_dict(bad)
        assert err.value.key == key


def test_matmul_patch_projection_equals_the_convolution():
    model = _model()
    x = torch.randn(3, 4, 16, 16)
    conv = model.patch_embed.project(x)
    assert model.patch_projection == "matmul"
    torch.testing.assert_close(model._project(x), conv, atol=1e-5, rtol=1e-5)
    model.patch_projection = "conv"
    assert torch.equal(model._project(x), conv)
