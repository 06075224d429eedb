"""TerraTorch's registries build geovit backbones through timm (TerraTorch installs with the dev extra).

TerraTorch's ``timm`` backbone source calls ``timm.create_model(name, features_only=True, ...)``, so
the backbone keywords (``in_chans``, ``default_channels``, ``out_indices``, size overrides) reach
geovit's models, and its ``EncoderDecoderFactory`` puts a decoder on the maps ``feature_info``
describes: a ChannelViT fed Sentinel-2 bands only, and a change-detection model on ChangeViT's
bi-temporal feature pyramid fed one (B, 2, C, H, W) tensor.
"""
from __future__ import annotations

import torch
from terratorch.models import EncoderDecoderFactory
from terratorch.registry import BACKBONE_REGISTRY

import geovit.models  # noqa: F401  (registers geovit's variants with timm)

TINY = dict(in_chans=18, img_size=32, embed_dim=32, depth=2, num_heads=2)


def test_backbone_registry_builds_a_bound_channelvit():
    assert "channelvit_small_patch8" in BACKBONE_REGISTRY
    torch.manual_seed(0)
    backbone = BACKBONE_REGISTRY.build("timm_channelvit_tiny_patch8", default_channels="sentinel2", out_indices=[0, 1],
                                       **TINY)
    assert backbone.out_channels == [32, 32]
    x = torch.randn(2, 10, 32, 32)
    feats = backbone(x)
    assert [tuple(f.shape) for f in feats] == [(2, 32, 4, 4)] * 2
    torch.manual_seed(0)  # the same weights as a plain geovit model: the maps are its channel means
    model = geovit.models.create_model("channelvit_tiny_patch8", **TINY).eval()
    backbone.eval()
    with torch.no_grad():
        want = model.forward_intermediates(x, channels=list(range(8, 18)), intermediates_only=True)
        got = backbone(x)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_encoder_decoder_factory_segments_with_geovit_backbones():
    factory = EncoderDecoderFactory()
    torch.manual_seed(0)
    seg = factory.build_model(task="segmentation", backbone="timm_channelvit_tiny_patch8", decoder="FCNDecoder",
                              num_classes=4, backbone_default_channels="sentinel2", backbone_out_indices=[1],
                              **{f"backbone_{k}": v for k, v in TINY.items()})
    out = seg(torch.randn(2, 10, 32, 32)).output
    assert out.shape == (2, 4, 32, 32) and torch.isfinite(out).all()
    change = factory.build_model(task="segmentation", backbone="timm_changevit_tiny", decoder="UNetDecoder",
                                 num_classes=2, backbone_embed_dim=48, backbone_depth=1,
                                 backbone_out_indices=[0, 1, 2, 3], decoder_channels=[64, 32, 16, 8])
    pair = torch.randn(2, 2, 3, 32, 32)
    logits = change(pair).output
    assert logits.shape == (2, 2, 32, 32)
    logits.square().mean().backward()
    grads = {k: p.grad for k, p in change.named_parameters()}
    vit = next(k for k in grads if k.endswith("vit.patch_embed.proj.weight"))
    assert grads[vit].abs().sum() > 0  # both branches of the encoder take part
    assert all(g is not None for k, g in grads.items() if ".detail_capture." in k)
