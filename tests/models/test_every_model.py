"""Every registered model: forward, backward, config JSON round trip, converted-file round trip;
every geovit timm model: build, forward, ``forward_intermediates``, ``features_only``."""
from __future__ import annotations

import json

import pytest
import timm
import torch

from geovit.hub import load_converted, save_converted
from geovit.models import create_model, list_models, model_family
from geovit.models.families import BUILTIN_FAMILIES, FAMILIES, family_module

#: per family: tiny size overrides and a function making a small input batch (positional args).
TINY = {
    "channelvit": (dict(img_size=16, in_chans=4, embed_dim=16, depth=1, num_heads=2, num_classes=3, hcs_seed=0),
                   lambda g: (torch.randn(2, 3, 16, 16, generator=g), torch.tensor([0, 2, 3]))),
    "chamaevit": (dict(img_size=16, in_chans=4, embed_dim=16, depth=1, num_heads=2, num_memory_tokens=1,
                       decoder={"num_heads": 2}),
                  lambda g: (torch.randn(2, 3, 16, 16, generator=g), torch.tensor([3, 0, 1]))),
    "changevit": (dict(embed_dim=48, depth=1, num_heads=6),
                  lambda g: (torch.randn(1, 3, 32, 32, generator=g), torch.randn(1, 3, 32, 32, generator=g))),
    "vicon": (dict(num_channels=3, embed_dim=16, num_heads=2, mlp_dim=32, depth=1, max_pairs=2, num_patches=2,
                   patch_size=4),
              lambda g: (torch.randn(1, 2, 3, 8, 8, generator=g), torch.randn(1, 2, 3, 8, 8, generator=g))),
}


def _tiny(name: str):
    torch.manual_seed(0)
    model = create_model(name, **TINY[_family(name)][0])
    return model.eval()


def _family(name: str) -> str:
    family = model_family(name)
    assert family in TINY, f"model {name!r} of family {family!r} has no tiny test config in TINY"
    return family


def _inputs(name: str):
    return TINY[_family(name)][1](torch.Generator().manual_seed(1))


def test_every_family_has_registered_models():
    families = {_family(name) for name in list_models()}
    assert families == set(FAMILIES) == set(TINY)


@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name):
    model = _tiny(name)
    out = model(*_inputs(name))
    assert torch.isfinite(out).all()
    (out.float() ** 2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", list_models())
def test_config_json_round_trip(name):
    model = _tiny(name)
    family = family_module(_family(name))
    clone = family.build(json.loads(json.dumps(model.config)))
    mine, theirs = model.state_dict(), clone.state_dict()
    assert {k: tuple(v.shape) for k, v in theirs.items()} == {k: tuple(v.shape) for k, v in mine.items()}
    assert json.loads(json.dumps(clone.config)) == json.loads(json.dumps(model.config))
    clone.load_state_dict(mine)
    inputs = _inputs(name)
    with torch.no_grad():
        assert torch.equal(clone.eval()(*inputs), model(*inputs))


@pytest.mark.parametrize("name", list_models())
def test_geovit_state_dict_passes_the_checkpoint_filter(name):
    """``checkpoint_filter_fn`` maps official layouts and leaves geovit's own keys alone."""
    model = _tiny(name)
    state = model.state_dict()
    filtered = family_module(_family(name)).checkpoint_filter_fn(state, model)
    assert filtered.keys() == state.keys()
    assert all(torch.equal(filtered[k], state[k]) for k in state)


@pytest.mark.parametrize("name", list_models())
def test_converted_file_round_trip(name, tmp_path):
    model = _tiny(name)
    family = _family(name)
    path = tmp_path / f"{name}.safetensors"
    save_converted(model, family, model.config, path)
    again = load_converted(path, family=family)
    assert not again.training and again.config == model.config
    inputs = _inputs(name)
    with torch.no_grad():
        assert torch.equal(again(*inputs), model(*inputs))


#: per family: tiny timm keywords (channel models bound, since frameworks call ``model(x)``) and an input shape.
TIMM_TINY = {
    "channelvit": (dict(img_size=16, in_chans=4, embed_dim=16, depth=2, num_heads=2, num_classes=3,
                        default_channels=[0, 2, 3]), (2, 3, 16, 16)),
    "chamaevit": (dict(img_size=16, in_chans=4, embed_dim=16, depth=2, num_heads=2, num_memory_tokens=1,
                       decoder={"num_heads": 2}, default_channels=[3, 0, 1]), (2, 3, 16, 16)),
    "changevit": (dict(embed_dim=48, depth=2, num_heads=6), (1, 2, 3, 32, 32)),
}
TIMM_NAMES = sorted(name for name in list_models() if timm.is_model(name))


def test_every_image_family_is_in_timm():
    assert {model_family(name) for name in TIMM_NAMES} == set(TIMM_TINY) == set(BUILTIN_FAMILIES)
    assert TIMM_NAMES == sorted(n for n in list_models() if model_family(n) in BUILTIN_FAMILIES)


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_timm_model_forward_intermediates_and_features(name):
    kwargs, shape = TIMM_TINY[model_family(name)]
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs).eval()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
        _, maps = model.forward_intermediates(x)
    assert torch.isfinite(out).all()
    height, width = shape[-2:]
    expected = [(shape[0], f["num_chs"], height // f["reduction"], width // f["reduction"]) for f in model.feature_info]
    assert [tuple(m.shape) for m in maps] == expected
    torch.manual_seed(0)  # the same weights, pruned to the last level
    features = timm.create_model(name, features_only=True, out_indices=[-1], **kwargs).eval()
    assert features.feature_info.channels() == [model.feature_info[-1]["num_chs"]]
    with torch.no_grad():
        (last,) = features(x)
    torch.testing.assert_close(last, maps[-1])
