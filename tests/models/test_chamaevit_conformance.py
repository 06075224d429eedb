"""ChA-MAEViT against golden outputs of the official code (../shared/conformance/chamaevit).

Every eval case (features, logits, padded batches, partial and single channel sets) and every
train case (each DCP strategy with the saved masks: tokens, decoder, reconstruction, every loss
term) must match at atol = rtol = 1e-5, for the model loaded by ``geovit.hub.load_official`` and
for the one ``timm.create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=...))``
builds. Intermediate arrays are read with forward hooks.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import timm
import torch

import geovit.hub
from geovit.models.chamaevit import ChAMAEViT

TOL = dict(atol=1e-5, rtol=1e-5)
CASES_EVAL = ["eval_full", "eval_full_altpool", "eval_partial", "eval_single", "eval_varchan"]
CASES_TRAIN = ["train_patch", "train_channel", "train_both", "train_varchan_both", "train_varchan_channel"]
DCP_KEYS = ["tokens_to_keep", "ind_restore", "mask", "visibles", "channels_sampled", "mae_patch_masks"]
LOSSES = {"proxy_loss": "loss_proxy", "ce_loss": "loss_ce", "mae_img_loss": "loss_recon",
          "mae_fourier_loss": "loss_fourier", "mae_loss": "loss_mae",
          "diverse_channeltoken_loss": "loss_channel_diversity",
          "diverse_patchtoken_loss": "loss_token_diversity", "loss": "loss"}


@pytest.fixture(scope="module")
def golden(conformance):
    return conformance("chamaevit")


@pytest.fixture(scope="module", params=["hub", "timm"])
def official_model(golden, request) -> ChAMAEViT:
    """The golden model through ``geovit.hub.load_official`` and through ``timm.create_model``."""
    path = golden.file("state_dict.pt")
    official = golden.config["constructor"]["kwargs"]
    if request.param == "hub":
        return geovit.hub.load_official("chamaevit", path, official)
    # a timm user passes the architecture as constructor keywords (the official names geovit shares)
    params = inspect.signature(ChAMAEViT).parameters
    kwargs = {k: v for k, v in official.items() if k in params}
    return timm.create_model("chamaevit_tiny_patch8", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                             **kwargs).eval()


def _close(actual, expected, what):
    actual = actual.detach().cpu().numpy() if torch.is_tensor(actual) else np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, err_msg=what, **TOL)


def _case(golden, case: str):
    """(x, ids, channel_mask, y) of a case, and its golden arrays keyed without the case prefix."""
    expected = {k.split("__", 1)[1]: v for k, v in golden.io.items() if k.startswith(case + "__")}
    return _inputs(golden, case), expected


def _inputs(golden, case: str):
    kw = golden.config["cases"][case]["forward_kwargs"]
    x = golden.io[kw["x"]["array"]]
    if kw["x"]["channel_index"] is not None:
        x = x[:, kw["x"]["channel_index"]]
    x = torch.from_numpy(np.ascontiguousarray(x))
    mask = None if kw["valid_channel_masks"] is None else torch.from_numpy(golden.io[kw["valid_channel_masks"]])
    ids = kw["channel_ids_list"]
    if ids is not None:
        if mask is None:
            ids = ids[0]
        else:  # per-sample lists -> (B, C) padded with 0 (ignored under the mask)
            ids = [row + [0] * (x.shape[1] - len(row)) for row in ids]
        ids = torch.tensor(ids)
    return x, ids, mask, torch.from_numpy(golden.io[kw["y"]])


class _Probe:
    """Forward hooks on the modules whose outputs the golden data records."""

    def __init__(self, model: ChAMAEViT):
        self.out: dict[str, torch.Tensor] = {}
        pairs = {"encoder_tokens": model.norm, "attn_pool_out": model.attn_pooling,
                 "decoder_tokens": model.decoder, "proxy_head_out": model.proxy_head}
        self.handles = [m.register_forward_hook(self._keep(name)) for name, m in pairs.items()]

    def _keep(self, name):
        def hook(module, args, output):
            self.out[name] = output
        return hook

    def __enter__(self) -> "_Probe":
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def _check_channel_tokens(net, x, ids, mask, expected, case):
    ch = net._resolve_channels(x, ids, mask)
    used = net.patch_embed.channel_tokens(ch.ids, ch.valid).detach()  # (n, C, D) -> official (n, D, C, 1, 1)
    _close(used.permute(0, 2, 1)[..., None, None], expected["channel_tokens_used"], f"{case}: channel tokens")


@pytest.fixture
def model(official_model, golden, request):
    """The official model with a case's attribute overrides applied (and undone afterwards)."""
    case = request.param
    overrides = golden.config["cases"][case]["attribute_overrides_before_forward"]
    saved = {k: getattr(official_model, k) for k in overrides}
    for k, v in overrides.items():
        setattr(official_model, k, v)
    yield case, official_model
    for k, v in saved.items():
        setattr(official_model, k, v)


@pytest.mark.parametrize("model", CASES_EVAL, indirect=True)
def test_eval_case_matches_official(model, golden):
    case, net = model
    (x, ids, mask, _), expected = _case(golden, case)
    with _Probe(net) as probe, torch.no_grad():
        logits = net(x, channels=ids, channel_mask=mask)
        feat = net.forward_features(x, channels=ids, channel_mask=mask)
        conv = net.patch_embed.project(x)  # (B, C, P, D)
        pos = net.interpolate_pos_encoding(x.shape[1], x.shape[2] // 8, x.shape[3] // 8)
    _close(logits, expected["res__output"], f"{case}: logits")
    _close(feat, expected["pooled_feature"], f"{case}: fused feature")
    _close(probe.out["encoder_tokens"], expected["encoder_tokens"], f"{case}: encoder tokens")
    _close(probe.out["attn_pool_out"], expected["attn_pool_out"], f"{case}: attention pooling")
    _check_channel_tokens(net, x, ids, mask, expected, case)
    if "patch_embed_conv_out" in expected:
        b, c, P, d = conv.shape
        _close(conv.permute(0, 3, 1, 2).reshape(b, d, c, 4, 4), expected["patch_embed_conv_out"], f"{case}: conv")
    if "pos_embed_used" in expected:
        _close(pos, expected["pos_embed_used"], f"{case}: positional embedding")


def _saved_masks(golden, case):
    arrays = {k: golden.io.get(f"{case}__dcp__{k}") for k in DCP_KEYS}
    return {"strategy": golden.config["cases"][case]["dcp_strategy"], **arrays}


@pytest.mark.parametrize("model", CASES_TRAIN, indirect=True)
def test_train_case_matches_official(model, golden):
    case, net = model
    (x, ids, mask, y), expected = _case(golden, case)
    with _Probe(net) as probe, torch.no_grad():
        out = net.pretrain_step(x, channels=ids, channel_mask=mask, masks=_saved_masks(golden, case), labels=y)
    _check_channel_tokens(net, x, ids, mask, expected, case)
    _close(probe.out["encoder_tokens"], expected["encoder_tokens"], f"{case}: encoder tokens")
    _close(probe.out["attn_pool_out"], expected["attn_pool_out"], f"{case}: attention pooling")
    _close(probe.out["decoder_tokens"], expected["decoder_tokens"], f"{case}: decoder tokens")
    _close(probe.out["proxy_head_out"], expected["proxy_head_out"], f"{case}: proxy head")
    _close(out["features"], expected["pooled_feature"], f"{case}: fused feature")
    _close(out["logits"], expected["res__output"], f"{case}: logits")
    _close(out["pred"], expected["reconstruction"], f"{case}: reconstruction")
    for official, ours in LOSSES.items():
        _close(out[ours], expected[f"res__{official}"], f"{case}: {official}")
    assert not out["decoder_skipped"]
    # the pixel mask is the loss mask spread over each patch's pixels
    loss_mask = torch.from_numpy(expected["dcp__mask"]).reshape(x.shape[0], x.shape[1], 4, 4)
    assert torch.equal(out["pixel_mask"][:, :, ::8, ::8], loss_mask)


@pytest.mark.parametrize("model", CASES_TRAIN, indirect=True)
def test_seeded_dcp_draw_reproduces_official_masks(model, golden):
    """Seeding torch and numpy as the reference run did reproduces its masks exactly."""
    case, net = model
    x, ids, mask, _ = _inputs(golden, case)
    seed = golden.config["cases"][case]["rng_seed_set_right_before_forward"]
    torch.manual_seed(seed)
    np.random.seed(seed)
    masks = net.sample_masks(x.shape[0], x.shape[1], mask)
    assert masks.strategy == golden.config["cases"][case]["dcp_strategy"]
    for key in DCP_KEYS:
        want = golden.io.get(f"{case}__dcp__{key}")
        got = getattr(masks, key)
        if want is None:
            assert got is None, key
        else:
            np.testing.assert_array_equal(got.numpy(), want, err_msg=f"{case}: {key}")


def test_official_safetensors_checkpoint_loads(golden, tmp_path):
    """The official checkpoint layout (checkpoint-*/model.safetensors) loads through the hub."""
    from safetensors.torch import save_file

    state = torch.load(golden.file("state_dict.pt"), weights_only=True)
    path = tmp_path / "checkpoint-3" / "model.safetensors"
    path.parent.mkdir()
    save_file({f"module.{k}": v.contiguous() for k, v in state.items()}, str(path))
    net = geovit.hub.load_official("chamaevit", path, {"num_heads": 3, "decoder": {"num_heads": 4}})
    assert net.config["encoder_pooling"] == "cls_attn_pooling_sigmoid" and net.config["num_memory_tokens"] == 2
    x, _, _, _ = _inputs(golden, "eval_full")
    with torch.no_grad():
        _close(net(x), golden.io["eval_full__res__output"], "safetensors: logits")
