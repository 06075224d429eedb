"""VICON model: conformance against the official ICON_UNCROPPED (golden data in
../shared/conformance/vicon/), official-checkpoint loading, block-causal structure and per-prompt
normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geovit import hub
from geovit.errors import CheckpointError, GeovitError
from geovit.models.layers import set_fused_attention
from pdes.normalization import denormalize, normalize, prompt_statistics
from pdes.vicon import VICON, block_causal_mask, build, checkpoint_filter_fn, infer_config, load_official

TINY = dict(num_channels=3, embed_dim=16, num_heads=2, mlp_dim=32, depth=2, max_pairs=4, num_patches=2, patch_size=4)


@pytest.fixture(scope="module")
def golden(conformance):
    conf = conformance("vicon")
    model = hub.load_official("vicon", conf.file("state_dict.pt"), conf.config["constructor_cfg"])
    io = {k: torch.from_numpy(v) for k, v in conf.io.items()}
    return model, io, conf


def tiny_model(seed: int = 0, **kw) -> VICON:
    torch.manual_seed(seed)
    return VICON(**{**TINY, **kw}).eval()


# ------------------------------------------------------------------------------ conformance
@pytest.mark.parametrize("fused", [True, False])
def test_forward_matches_official_fp32(golden, fused):
    model, io, _ = golden
    set_fused_attention(model, fused)
    try:
        with torch.no_grad():
            out = model(io["prompt_init"], io["prompt_end"], io["prompt_c_mask"])
    finally:
        set_fused_attention(model, True)
    assert out.shape == io["fwd_out"].shape
    assert (out - io["fwd_out"]).abs().max() <= 1e-5


def test_forward_matches_official_fp64(golden):
    model, io, conf = golden
    model64 = hub.load_official("vicon", conf.file("state_dict.pt"), conf.config["constructor_cfg"]).double()
    with torch.no_grad():
        out = model64(io["prompt_init"].double(), io["prompt_end"].double())
    assert out.dtype == torch.float64
    assert (out - io["fwd_out_fp64"]).abs().max() <= 1e-10


def test_shortened_prompt_is_prefix_and_last_only_path(golden):
    model, io, _ = golden
    init, end = io["prompt_init"], io["prompt_end"]
    with torch.no_grad():
        short = model(init[:, :2], end[:, :2])
        full = model(init, end)
        last = model(init, end, last_only=True)
    assert (short - io["fwd_short_out"]).abs().max() <= 1e-5
    assert torch.equal(short, full[:, :2])  # block-causal: later pairs change nothing
    assert last.shape == (init.shape[0], 1, *init.shape[2:])
    assert (last[:, 0] - full[:, -1]).abs().max() <= 1e-6


def test_normalisation_statistics_match_official(golden):
    _, io, _ = golden
    mean, std = prompt_statistics(io["prompt_init"], io["prompt_c_mask"])
    assert torch.allclose(mean, io["pipe_mean"], atol=1e-6, rtol=1e-6)
    assert torch.allclose(std, io["pipe_std"], atol=1e-6, rtol=1e-6)
    assert torch.allclose(normalize(io["prompt_init"], mean, std), io["pipe_init_norm"], atol=1e-5)
    assert torch.allclose(normalize(io["prompt_end"], mean, std), io["pipe_end_norm"], atol=1e-5)


def test_pipeline_predictions_match_official(golden):
    model, io, _ = golden
    pred = model.predict(io["prompt_init"], io["prompt_end"], io["prompt_c_mask"])
    assert pred.shape == io["pipe_pred"].shape
    assert (pred - io["pipe_pred"]).abs().max() <= 1e-5


def test_official_state_dict_round_trip_names(golden):
    model, _, conf = golden
    raw = torch.load(conf.file("state_dict.pt"), weights_only=True)
    assert set(raw) == set(conf.config["state_dict"]["keys"])
    mine = model.state_dict()
    assert len(mine) == len(raw)
    assert torch.equal(mine["mask"], raw["mask"])
    assert torch.equal(mine["blocks.1.attn.qkv.weight"], raw["transformer.layers.1.self_attn.in_proj_weight"])
    assert model.config == infer_config(checkpoint_filter_fn(raw), conf.config["constructor_cfg"])


# ------------------------------------------------------------------------------ loading
def test_stored_mask_is_honoured(golden):
    model, io, conf = golden
    raw = torch.load(conf.file("state_dict.pt"), weights_only=True)
    blocked = ~torch.eye(raw["mask"].shape[0], dtype=torch.bool)  # every token only sees itself
    custom = load_official({**raw, "mask": blocked}, conf.config["constructor_cfg"])
    assert torch.equal(custom.mask, blocked)
    with torch.no_grad():
        a = custom(io["prompt_init"], io["prompt_end"])
        b = custom(io["prompt_init"], io["prompt_end"] + 1.0)  # QoI never seen by COND tokens now
        ref = model(io["prompt_init"], io["prompt_end"])
    assert torch.equal(a, b)
    assert (a[:, 1:] - ref[:, 1:]).abs().max() > 1e-3


def test_load_official_rejects_foreign_and_mismatched(golden, tmp_path):
    _, _, conf = golden
    cfg = conf.config["constructor_cfg"]
    raw = torch.load(conf.file("state_dict.pt"), weights_only=True)
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_official({**raw, "encoder.weight": torch.zeros(1)}, cfg)
    with pytest.raises(CheckpointError, match=r"1 VICON weights missing, e\.g\. \['post_proj\.bias'\]"):
        load_official({k: v for k, v in raw.items() if k != "post_proj.bias"}, cfg)
    wide = {**cfg, "transformer": {**cfg["transformer"], "dim_token": 64}}
    with pytest.raises(CheckpointError, match="shape"):
        load_official(raw, wide)
    with pytest.raises(CheckpointError, match="dim_channel"):
        load_official(raw, {"demo_num": 4})
    path = tmp_path / "200000_params.pth"
    torch.save({k: v for k, v in raw.items() if k != "mask"}, path)  # a file without the buffer
    model = hub.load_official("vicon", path, cfg)
    assert torch.equal(model.mask, raw["mask"])
    with pytest.raises(CheckpointError, match=str(path)):
        hub.load_official("vicon", path, wide)


def test_converted_round_trip(golden, tmp_path):
    model, io, _ = golden
    path = tmp_path / "vicon.safetensors"
    hub.save_converted(model, "vicon", model.config, path)
    again = hub.load_converted(path, family="vicon")
    with torch.no_grad():
        assert torch.equal(again(io["prompt_init"], io["prompt_end"]), model(io["prompt_init"], io["prompt_end"]))
    assert build(model.config).config == model.config
    with pytest.raises(GeovitError, match="unknown keys"):
        build({**model.config, "width": 3})


def test_official_size_and_bad_shapes():
    model = VICON()  # released configuration, construction only
    assert sum(p.numel() for p in model.parameters()) == 87_757_568
    assert model.mask.shape == (1280, 1280) and model.mask.dtype == torch.bool
    tiny = tiny_model()
    frames = torch.zeros(1, 2, 3, 8, 8)
    with pytest.raises(GeovitError, match=r"cond: expected shape \(batch, pairs, 3, 8, 8\)"):
        tiny(torch.zeros(1, 2, 3, 16, 16), torch.zeros(1, 2, 3, 16, 16))
    with pytest.raises(GeovitError, match="max_pairs=4"):
        tiny(torch.zeros(1, 5, 3, 8, 8), torch.zeros(1, 5, 3, 8, 8))
    with pytest.raises(GeovitError, match="qoi"):
        tiny(frames, frames[:, :1])


# ------------------------------------------------------------------------------ structure
def test_block_causal_mask_layout():
    m = block_causal_mask(4, 2)  # COND_0, QoI_0, COND_1, QoI_1 with 2 tokens each
    cond1_rows, qoi1_rows = m[4:6], m[6:8]
    assert not cond1_rows[:, :6].any() and cond1_rows[:, 6:].all()  # COND_1 sees pair 0 and itself
    assert not qoi1_rows.any()  # QoI_1 sees everything up to itself
    assert m[0:2, 2:].all() and not m[0:2, :2].any()


def test_patchify_order_and_inverse():
    model = tiny_model()
    frames = torch.arange(1 * 1 * 3 * 8 * 8, dtype=torch.float32).reshape(1, 1, 3, 8, 8)
    patches = model.patchify(frames)
    assert patches.shape == (1, 1, 4, 3 * 16)
    # token 1 = patch row 0, column 1; inside: channel slowest, then pixel row, then column
    assert torch.equal(patches[0, 0, 1, :4], frames[0, 0, 0, 0, 4:8])
    assert torch.equal(patches[0, 0, 1, 16:20], frames[0, 0, 1, 0, 4:8])
    assert torch.equal(model.unpatchify(patches), frames)


@settings(max_examples=8, deadline=None)
@given(pairs=st.integers(2, 4), cut=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_later_pairs_never_change_earlier_predictions(pairs, cut, seed):
    cut = min(cut, pairs - 1)
    model = _shared_tiny()
    g = torch.Generator().manual_seed(seed)
    cond, qoi = torch.randn(2, 2, pairs, 3, 8, 8, generator=g)
    cond2, qoi2 = cond.clone(), qoi.clone()
    cond2[:, cut:] = torch.randn(cond2[:, cut:].shape, generator=g) * 3
    qoi2[:, cut - 1:] = torch.randn(qoi2[:, cut - 1:].shape, generator=g) * 3  # QoI_{cut-1} too
    with torch.no_grad():
        a, b = model(cond, qoi), model(cond2, qoi2)
    assert torch.equal(a[:, :cut], b[:, :cut])
    assert (a[:, cut:] - b[:, cut:]).abs().max() > 0


_MODEL: list[VICON] = []


def _shared_tiny() -> VICON:
    if not _MODEL:
        _MODEL.append(tiny_model(seed=3))
    return _MODEL[0]


def test_gradients_reach_every_parameter():
    model = tiny_model().train()
    cond, qoi = torch.randn(2, 2, 3, 3, 8, 8)
    model(cond, qoi).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


# ------------------------------------------------------------------------------ normalisation
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    scale=st.floats(0.01, 100.0),
    shift=st.floats(-50.0, 50.0),
    mask=st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_normalisation_properties(seed, scale, shift, mask):
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(2, 3, 4, 5, 5, generator=g, dtype=torch.float64)
    c_mask = torch.tensor(mask + [True], dtype=torch.float64)
    mean, std = prompt_statistics(cond, c_mask)
    # round trip
    assert torch.allclose(denormalize(normalize(cond, mean, std), mean, std), cond, atol=1e-10)
    # masked slots and the node-type slot untouched
    off = ~torch.tensor(mask + [False])
    assert torch.all(mean[:, :, off] == 0) and torch.all(std[:, :, off] == 1)
    # active slots: zero mean, unit unbiased std over (pairs, H, W) of the COND frames
    normed = normalize(cond, mean, std)
    on = ~off
    if on.any():
        assert torch.allclose(normed[:, :, on].mean(dim=(1, 3, 4)), torch.zeros(2, int(on.sum()), dtype=torch.float64), atol=1e-9)
        assert torch.allclose(normed[:, :, on].std(dim=(1, 3, 4)), torch.ones(2, int(on.sum()), dtype=torch.float64), atol=1e-9)
    # affine changes of a field leave its normalised values unchanged
    moved = cond.clone()
    moved[:, :, 0] = cond[:, :, 0] * scale + shift
    m2, s2 = prompt_statistics(moved, c_mask)
    if mask[0]:
        assert torch.allclose(normalize(moved, m2, s2)[:, :, 0], normed[:, :, 0], atol=1e-7)


def test_normalisation_floor_and_schemes():
    cond = torch.zeros(1, 2, 3, 4, 4)
    cond[:, :, 0] = 5.0  # constant field: std 0 -> floor
    cond[:, :, 1] = torch.randn(1, 2, 4, 4) * 1e-6
    mean, std = prompt_statistics(cond, torch.ones(3))
    assert std[0, 0, 0].item() == pytest.approx(1e-4) and mean[0, 0, 0].item() == pytest.approx(5.0)
    assert std[0, 0, 1].item() == pytest.approx(1e-4)
    _, std_one = prompt_statistics(cond, torch.ones(3), scheme="scale_to_one")
    assert std_one[0, 0, 0].item() == 1.0
    with pytest.raises(GeovitError, match="scheme"):
        prompt_statistics(cond, torch.ones(3), scheme="minmax")
    with pytest.raises(GeovitError, match="channel_mask"):
        prompt_statistics(cond, torch.ones(4))


def test_predict_zeroes_masked_slots_and_drops_node_type():
    model = tiny_model()
    cond, qoi = torch.randn(2, 2, 3, 3, 8, 8)
    c_mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    pred = model.predict(cond, qoi, c_mask)
    assert pred.shape == (2, 3, 2, 8, 8)
    assert torch.all(pred[0, :, 1] == 0) and pred[1, :, 1].abs().sum() > 0
    last = model.predict(cond, qoi, c_mask, last_only=True)
    assert torch.allclose(last[:, 0], pred[:, -1], atol=1e-5)
    # equivariance of the pipeline to an affine change of units of an active field
    cond2, qoi2 = cond.clone(), qoi.clone()
    cond2[:, :, 0] = cond[:, :, 0] * 7 + 3
    qoi2[:, :, 0] = qoi[:, :, 0] * 7 + 3
    pred2 = model.predict(cond2, qoi2, c_mask)
    assert torch.allclose(pred2[:, :, 0], pred[:, :, 0] * 7 + 3, atol=1e-3)
    assert np.isfinite(pred2.numpy()).all()
