"""geovit's variants as timm models: registry, pretrained files, bound channels, timm's feature API."""
from __future__ import annotations

import json

import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import geovit.hub
from geovit.channels import SO2SAT_BANDS
from geovit.errors import CheckpointError, GeovitError
from geovit.models import create_model, list_models, model_family
from geovit.models.families import BUILTIN_FAMILIES

TINY_CVIT = dict(img_size=32, in_chans=18, embed_dim=24, depth=3, num_heads=2, num_classes=5)
TINY_CMAE = dict(img_size=32, in_chans=6, embed_dim=24, depth=3, num_heads=2, num_memory_tokens=2,
                 decoder={"num_heads": 2}, num_classes=4)
TINY_CD = dict(embed_dim=48, depth=2, num_heads=6)
S2 = list(range(8, 18))


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def cvit():
    torch.manual_seed(0)
    return timm.create_model("channelvit_tiny_patch8", **TINY_CVIT).eval()


@pytest.fixture(scope="module")
def cmae():
    torch.manual_seed(0)
    return timm.create_model("chamaevit_tiny_patch8", **TINY_CMAE).eval()


@pytest.fixture(scope="module")
def cd():
    torch.manual_seed(0)
    return timm.create_model("changevit_tiny", **TINY_CD).eval()


# ---------------------------------------------------------------------------------- registry
def test_geovit_variants_are_timm_models():
    ours = set(timm.list_models(module=list(BUILTIN_FAMILIES)))  # timm names a model's module by its last part
    image_families = {n for n in list_models() if model_family(n) in BUILTIN_FAMILIES}
    assert ours == image_families and len(ours) == 15
    assert {timm.models.get_pretrained_cfg(n).family for n in ours} == set(BUILTIN_FAMILIES)
    assert "channelvit_tiny_patch8.so2sat" in timm.list_models("channelvit_tiny*", include_tags=True)
    assert sorted(timm.list_models("channelvit*")) == list_models("channelvit*")
    assert "vicon" not in timm.list_models()  # the PDE family declares no timm config: geovit only
    assert timm.models.get_pretrained_cfg("changevit_small").family == "changevit"


def test_usual_timm_kwargs_reach_the_constructor():
    m = timm.create_model("channelvit_small_patch16", in_chans=7, num_classes=9, img_size=64, drop_path_rate=0.2,
                          embed_dim=32, depth=2, num_heads=4)
    assert {k: m.config[k] for k in ("in_chans", "num_classes", "img_size", "drop_path_rate", "embed_dim", "depth",
                                     "num_heads", "patch_size")} == dict(
        in_chans=7, num_classes=9, img_size=64, drop_path_rate=0.2, embed_dim=32, depth=2, num_heads=4, patch_size=16)
    assert m.blocks[1].drop_path1.drop_prob == pytest.approx(0.2)
    c = timm.create_model("chamaevit_small_patch16", drop_path_rate=0.1, depth=2, embed_dim=32, num_heads=4,
                          decoder={"num_heads": 4})
    assert c.config["drop_path_rate"] == 0.1 and c.blocks[1].drop_path1.drop_prob == pytest.approx(0.1)
    cd = timm.create_model("changevit_tiny", embed_dim=48, depth=2, drop_path_rate=0.1, num_classes=3)
    assert cd.vit.blocks[1].drop_path1.drop_prob == pytest.approx(0.1) and cd.num_classes == 3
    assert cd.forward_logits(_x(1, 2, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_pretrained_cfg_carries_statistics_and_channel_table():
    tagged = timm.create_model("channelvit_small_patch8.so2sat_random_hcs", depth=1)
    cfg = tagged.pretrained_cfg
    assert tagged.in_chans == 18 and cfg["input_size"] == (18, 32, 32)
    assert cfg["channels"] == SO2SAT_BANDS and cfg["channel_table"] == "so2sat" and len(cfg["mean"]) == 18
    recipe = timm.create_model("chamaevit_tiny_patch16", depth=1).pretrained_cfg
    assert recipe["channel_table"] == "jumpcp" and len(recipe["std"]) == 8 and recipe["num_classes"] == 161
    # a model whose table no longer fits the names keeps no (wrong) names
    other = timm.create_model("channelvit_small_patch8.so2sat_random_hcs", in_chans=4, depth=1)
    assert "channels" not in other.pretrained_cfg and other.pretrained_cfg["input_size"][0] == 4
    assert timm.data.resolve_data_config({}, model=tagged)["mean"] == tuple(cfg["mean"])


# --------------------------------------------------------------------------------- bound channels
@pytest.mark.parametrize("spec", ["sentinel2", list(SO2SAT_BANDS[8:]), S2, torch.tensor(S2)])
def test_bound_channels_equal_explicit_ids(cvit, spec):
    bound = timm.create_model("channelvit_tiny_patch8", **TINY_CVIT, default_channels=spec).eval()
    bound.load_state_dict(cvit.state_dict())
    x = _x(2, 10, 32, 32)
    with torch.no_grad():
        assert torch.equal(bound(x), cvit(x, channels=S2))
        assert torch.equal(bound(x[:, :3], channels=[8, 9, 10]), cvit(x[:, :3], channels=[8, 9, 10]))  # ids win
    assert bound.default_channels == S2 and bound.config["default_channels"] == S2


def test_unbound_model_refuses_a_band_subset(cvit, cmae):
    with pytest.raises(GeovitError, match=r"x has 10 channels but the model's channel table has 18 .*default_channels"):
        cvit(_x(1, 10, 32, 32))
    with pytest.raises(GeovitError, match=r"x has 2 channels .* has 6"):
        cmae(_x(1, 2, 32, 32))
    with torch.no_grad():
        assert cvit(_x(1, 18, 32, 32)).shape == (1, 5)  # the whole table needs no ids


def test_binding_errors_and_round_trip(cmae, tmp_path):
    with pytest.raises(GeovitError, match=r"x has 3 channels but the model is bound to 2 input channels"):
        timm.create_model("chamaevit_tiny_patch8", **TINY_CMAE, default_channels=[1, 4])(_x(1, 3, 32, 32))
    with pytest.raises(GeovitError, match=r"default_channels: ids \[6\] fall outside .*in_chans=6"):
        timm.create_model("chamaevit_tiny_patch8", **TINY_CMAE, default_channels=[0, 6])
    with pytest.raises(GeovitError, match="default_channels: .*unknown channel name 'B99'"):
        create_model("channelvit_tiny_patch8", in_chans=18, depth=1, default_channels=["S2_B02", "B99"])
    with pytest.raises(GeovitError, match="twice"):
        create_model("channelvit_tiny_patch8", in_chans=18, depth=1, default_channels=[3, 3])
    bound = create_model("chamaevit_tiny_patch8", **TINY_CMAE, default_channels=[5, 0, 2]).eval()
    path = tmp_path / "bound.safetensors"
    geovit.hub.save_converted(bound, "chamaevit", bound.config, path)
    again = geovit.hub.load_converted(path, family="chamaevit")
    assert again.default_channels == [5, 0, 2]
    x = _x(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), bound(x, channels=[5, 0, 2]))
    bound.bind_channels(None)
    with pytest.raises(GeovitError, match="channel table has 6"):
        bound(x)


# ---------------------------------------------------------------------------- pretrained files
def test_converted_safetensors_through_timm(cvit, tmp_path):
    path = tmp_path / "cvit.safetensors"
    geovit.hub.save_converted(cvit, "channelvit", cvit.config, path)
    arch = {k: TINY_CVIT[k] for k in ("embed_dim", "depth", "num_heads")}
    again = timm.create_model("channelvit_tiny_patch8", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              **arch).eval()
    assert again.config["in_chans"] == 18 and again.num_classes == 5 and again.config["img_size"] == 32
    assert again.pretrained_cfg["file"] == str(path) and again.pretrained_cfg["num_classes"] == 5
    x = _x(2, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x, channels=[0, 9, 3, 17]), cvit(x, channels=[0, 9, 3, 17]))
    # another class count: a new head, every other tensor from the file
    new = timm.create_model("channelvit_tiny_patch8", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                            num_classes=2, **arch)
    assert new.head.out_features == 2
    mine = cvit.state_dict()
    assert all(torch.equal(v, mine[k]) for k, v in new.state_dict().items() if not k.startswith("head."))
    none = timm.create_model("channelvit_tiny_patch8", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                             num_classes=0, **arch)
    assert isinstance(none.head, torch.nn.Identity)
    # geovit's own create_model hands timm's keywords to timm
    same = create_model("channelvit_tiny_patch8", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                        **arch).eval()
    with torch.no_grad():
        assert torch.equal(same(x, channels=[0, 9, 3, 17]), cvit(x, channels=[0, 9, 3, 17]))
    with pytest.raises(GeovitError, match="features_only need a timm model, and 'vicon' is registered with geovit"):
        create_model("vicon", features_only=True)


def test_pretrained_errors_name_the_file_and_the_fix(cvit, tmp_path):
    with pytest.raises(CheckpointError, match=r"no weight file is given; pass pretrained_cfg_overlay=dict\(file="):
        timm.create_model("channelvit_tiny_patch8", pretrained=True)
    with pytest.raises(CheckpointError, match="offline only"):
        timm.create_model("changevit_tiny", pretrained=True, pretrained_cfg_overlay=dict(url="https://example.org/w"))
    path = tmp_path / "cvit.pth"
    torch.save(cvit.state_dict(), path)
    with pytest.raises(CheckpointError, match=rf"checkpoint {path}: .*the file holds embed_dim=24, depth=3 where "
                                              r"channelvit_tiny_patch8 with these arguments builds embed_dim=192, "
                                              r"depth=12: pass embed_dim=24, depth=3"):
        timm.create_model("channelvit_tiny_patch8", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    with pytest.raises(CheckpointError, match="not a ChangeViT checkpoint"):
        timm.create_model("changevit_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    with pytest.raises(CheckpointError, match="file not found"):
        timm.create_model("changevit_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "no.pt")))


# ------------------------------------------------------------------------------- feature API
@pytest.mark.parametrize("name", ["cvit", "cmae"])
def test_forward_intermediates_follows_timm(name, request):
    model = request.getfixturevalue(name)
    x = _x(2, 4, 32, 32)
    ids = [3, 0, 5, 1]
    with torch.no_grad():
        final, maps = model.forward_intermediates(x, channels=ids)
        tokens = model.forward_features(x, channels=ids) if name == "cvit" else model.forward_tokens(x, channels=ids)
        torch.testing.assert_close(final, tokens)
        assert [tuple(m.shape) for m in maps] == [(2, 24, 4, 4)] * 3
        last = model.forward_intermediates(x, indices=1, norm=True, channels=ids, intermediates_only=True)
        prefix = 1 + (model.num_memory_tokens if name == "cmae" else 0)
        mean = final[:, prefix:].reshape(2, 4, 16, 24).mean(dim=1)  # the last map is the normed tokens' mean
        torch.testing.assert_close(last[0], mean.transpose(1, 2).reshape(2, 24, 4, 4))
        early = model.forward_intermediates(x, indices=[0, -2], stop_early=True, output_fmt="NLC", channels=ids,
                                            intermediates_only=True)
        assert [tuple(m.shape) for m in early] == [(2, 16, 24)] * 2
        torch.testing.assert_close(early[1], maps[1].flatten(2).transpose(1, 2))
        pairs = model.forward_intermediates(x, indices=[1], return_prefix_tokens=True, channels=ids,
                                            intermediates_only=True)
        assert pairs[0][1].shape == (2, prefix, 24)
        as_dict = model.forward_intermediates(x, indices=[2], output_dict=True, channels=ids)
        assert set(as_dict) == {"image_intermediates", "image_features"}
    with pytest.raises(GeovitError, match=r"indices=\[3\]: .*3 feature levels"):
        model.forward_intermediates(x, indices=[3], channels=ids)
    with pytest.raises(GeovitError, match="output_fmt='NHWC'"):
        model.forward_intermediates(x, output_fmt="NHWC", channels=ids)


@settings(max_examples=8, deadline=None)
@given(perm=st.permutations(range(5)))
def test_channel_mean_maps_ignore_the_band_order(cvit, perm):
    """The per-channel tokens reduce to the same maps whatever order the bands come in."""
    ids = [1, 4, 8, 11, 17]
    x = _x(1, 5, 32, 32, seed=3)
    with torch.no_grad():
        ref = cvit.forward_intermediates(x, channels=ids, intermediates_only=True)
        got = cvit.forward_intermediates(x[:, list(perm)], channels=[ids[i] for i in perm], intermediates_only=True)
    for a, b in zip(ref, got, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_padded_channels_are_left_out_of_the_mean(cmae):
    x = _x(2, 4, 32, 32)
    valid = torch.tensor([[True, True, True, True], [True, True, False, False]])
    x[1, 2:] = 0
    ids = torch.tensor([[0, 1, 2, 3], [4, 5, 0, 0]])
    with torch.no_grad():
        padded = cmae.forward_intermediates(x, channels=ids, channel_mask=valid, intermediates_only=True)
        alone = cmae.forward_intermediates(x[1:, :2], channels=[4, 5], intermediates_only=True)
    for a, b in zip(padded, alone, strict=True):
        torch.testing.assert_close(a[1:], b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name, make, shape", [
    ("channelvit_tiny_patch8", dict(TINY_CVIT, default_channels="sentinel2"), (2, 10, 32, 32)),
    ("chamaevit_tiny_patch16", dict(TINY_CMAE, img_size=32, default_channels=[5, 1]), (2, 2, 32, 32)),
    ("changevit_small", dict(embed_dim=48, depth=1, num_heads=6), (1, 2, 3, 32, 32)),
])
def test_features_only_gives_the_maps_feature_info_describes(name, make, shape):
    full = timm.create_model(name, **make)
    feats = timm.create_model(name, features_only=True, out_indices=(0, 1), **make)
    out = feats(_x(*shape))
    assert [o.shape[1] for o in out] == feats.feature_info.channels()
    side = shape[-1]
    assert [side // o.shape[-1] for o in out] == feats.feature_info.reduction()
    assert "num_classes" not in feats.pretrained_cfg
    assert sum(p.numel() for p in feats.parameters()) < sum(p.numel() for p in full.parameters())  # pruned


def test_changevit_pair_layouts_and_logits(cd):
    t1, t2 = _x(1, 3, 32, 32), _x(1, 3, 32, 32, seed=1)
    with torch.no_grad():
        prob = cd(t1, t2)
        assert torch.equal(cd(torch.stack([t1, t2], dim=1)), prob)
        logits, maps = cd.forward_intermediates((t1, t2))
        torch.testing.assert_close(logits.sigmoid(), prob)
        early = cd.forward_intermediates(torch.stack([t1, t2], 1), indices=[0, 2], stop_early=True,
                                         intermediates_only=True)
        torch.testing.assert_close(early[0], maps[0])
        torch.testing.assert_close(early[1], maps[2])
    as_logits = timm.create_model("changevit_tiny", **TINY_CD, logits=True).eval()
    as_logits.load_state_dict(cd.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(as_logits(t1, t2), logits)
    with pytest.raises(GeovitError, match=r"one \(B, 2, 3, H, W\) tensor .*got \(1, 3, 3, 32, 32\)"):
        cd(torch.stack([t1, t2, t1], dim=1))
    cd2 = timm.create_model("changevit_tiny", **TINY_CD)
    cd2.reset_classifier(2)
    assert cd2.get_classifier().out_channels == 2 and cd2.forward_logits(t1, t2).shape == (1, 2, 32, 32)
    assert json.loads(json.dumps(cd2.config))["num_classes"] == 2
