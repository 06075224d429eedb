"""Shared layers: the one per-channel patch embedding, the positional resampler, attention."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geovit.errors import GeovitError
from geovit.models.layers import (
    PatchEmbedPerChannel, attention, channel_table_from_5d, resample_pos_grid_dino, tile_pos_embed,
)

C, P, D = 6, 4, 8


@pytest.fixture(scope="module")
def embed() -> PatchEmbedPerChannel:
    torch.manual_seed(0)
    return PatchEmbedPerChannel(P, C, D).eval()


@settings(max_examples=40, deadline=None)
@given(data=st.data(), batch=st.integers(1, 3), k=st.integers(1, C), seed=st.integers(0, 2**16))
def test_tokens_of_any_channel_subset_are_those_channels_tokens(embed, data, batch, k, seed):
    """For valid ids, the output is the per-channel embedding of exactly those channels, in their order."""
    g = torch.Generator().manual_seed(seed)
    full_x = torch.randn(batch, C, 2 * P, 3 * P, generator=g)
    with torch.no_grad():
        full = embed(full_x)  # ids 0..C-1
        shared = data.draw(st.permutations(range(C)))[:k]
        torch.testing.assert_close(embed(full_x[:, shared], shared), full[:, shared], rtol=0, atol=1e-6)
        rows = [data.draw(st.permutations(range(C)))[:k] for _ in range(batch)]
        x = torch.stack([full_x[b, rows[b]] for b in range(batch)])
        want = torch.stack([full[b, rows[b]] for b in range(batch)])
        torch.testing.assert_close(embed(x, torch.tensor(rows)), want, rtol=0, atol=1e-6)
    assert full.shape == (batch, C, 2 * 3, D)


def test_padded_slots_get_no_channel_embedding(embed):
    x = torch.zeros(2, 3, P, P)
    x[:, :2] = torch.randn(2, 2, P, P)
    valid = torch.tensor([[True, True, False], [True, True, True]])
    x[0, 2] = 0
    with torch.no_grad():
        out = embed(x, torch.tensor([[1, 4, 5], [1, 4, 5]]), valid)
        ref = embed(x[:, :2], [1, 4])
    torch.testing.assert_close(out[:, :2], ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(out[0, 2, 0], embed.proj.bias)  # zero pixels, zero channel token
    assert not torch.allclose(out[1, 2, 0], embed.proj.bias)


@pytest.mark.parametrize("channels, match", [
    ([0, 1, 6], r"channels: ids \[6\] fall outside the model's channel table 0\.\.5 \(in_chans=6\)"),
    ([-1, 0, 1], r"channels: ids \[-1\] fall outside"),
    ([0.0, 1.0, 2.0], "channels: expected integer channel ids, got dtype torch.float32"),
    ([True, False, True], "channels: expected integer channel ids, got dtype torch.bool"),
    ([0, 1], r"channels: shape \(2,\), expected \(3,\) or \(2, 3\) to match x of shape \(2, 3, 4, 4\)"),
    ([[0, 1, 2]] * 3, r"channels: shape \(3, 3\), expected"),
    ([[0, 1, 2], [3, 4]], "pad ragged per-sample lists"),
])
def test_bad_channel_ids_are_named(embed, channels, match):
    with pytest.raises(GeovitError, match=match):
        embed(torch.zeros(2, 3, P, P), channels)


def test_too_many_channels_without_ids_and_bad_masks(embed):
    with pytest.raises(GeovitError, match="x has 7 channels but the model's channel table has 6"):
        embed(torch.zeros(1, 7, P, P))
    x = torch.zeros(1, 2, P, P)
    with pytest.raises(GeovitError, match="channel_mask: expected a bool tensor of shape"):
        embed(x, [0, 1], torch.ones(1, 2))
    with pytest.raises(GeovitError, match="at least one real channel"):
        embed(x, [0, 1], torch.zeros(1, 2, dtype=torch.bool))
    x[0, 1] = 1.0
    with pytest.raises(GeovitError, match="channel_mask disagrees with x: samples \\[0\\]"):
        embed(x, [0, 1], torch.tensor([[True, False]]))
    # ids of padded slots are not checked: they are ignored
    assert embed(torch.zeros(1, 2, P, P), [[0, 99]], torch.tensor([[True, False]])).shape == (1, 2, 1, D)
    with pytest.raises(GeovitError, match="channel_init"):
        PatchEmbedPerChannel(P, C, D, channel_init="ones")


def test_orthogonal_init_and_5d_layout():
    torch.manual_seed(0)
    table = PatchEmbedPerChannel(P, 5, 16, channel_init="orthogonal").channel_embed.weight.detach()
    torch.testing.assert_close(table @ table.t(), torch.eye(5), rtol=0, atol=1e-5)
    five = table.t()[None, :, :, None, None]  # official (1, D, C, 1, 1)
    assert torch.equal(channel_table_from_5d(five), table)


def test_tiled_positions_and_dino_resample():
    torch.manual_seed(0)
    pos = torch.randn(1, 2 + 9, 4)
    out = tile_pos_embed(pos, 2, 3, 3, 3)
    assert out.shape == (1, 2 + 27, 4) and torch.equal(out[:, :2], pos[:, :2])
    grid = resample_pos_grid_dino(pos[:, 2:], 3, 3)
    assert torch.equal(out[:, 2:11], grid) and torch.equal(out[:, 20:], grid)
    assert not torch.allclose(grid, pos[:, 2:], atol=1e-4)  # the DINO quirk: not the identity at native size
    with pytest.raises(ValueError, match="not a square grid"):
        resample_pos_grid_dino(torch.zeros(1, 8, 4), 2, 2)


@settings(max_examples=20, deadline=None)
@given(nq=st.integers(1, 5), nk=st.integers(1, 6), seed=st.integers(0, 999), masked=st.booleans())
def test_fused_and_materialised_attention_agree(nq, nk, seed, masked):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 3, n, 4, generator=g) for n in (nq, nk, nk))
    blocked = None
    if masked:
        blocked = torch.rand(nq, nk, generator=g) < 0.5
        blocked[:, 0] = False  # every query keeps one key
    torch.testing.assert_close(attention(q, k, v, blocked=blocked), attention(q, k, v, fused=False, blocked=blocked),
                               rtol=1e-5, atol=1e-6)
