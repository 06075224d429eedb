"""pad_channels_collate: mixed channel sets in one batch."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geovit.data.collate import pad_channels_collate, shared_channels
from geovit.errors import DataError


def _sample(ids, size=4, label=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(len(ids), size, size, generator=g), "channels": torch.tensor(ids), "label": label}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 11), min_size=1, max_size=6, unique=True), min_size=1, max_size=5))
def test_padding_round_trips_every_sample(channel_sets):
    samples = [_sample(ids, label=i, seed=i) for i, ids in enumerate(channel_sets)]
    batch = pad_channels_collate(samples)
    cmax = max(len(ids) for ids in channel_sets)
    assert batch["image"].shape == (len(samples), cmax, 4, 4)
    assert batch["channels"].shape == batch["channel_mask"].shape == (len(samples), cmax)
    assert batch["label"].tolist() == list(range(len(samples)))
    for i, s in enumerate(samples):
        m = batch["channel_mask"][i]
        assert int(m.sum()) == len(s["channels"])
        assert torch.equal(batch["image"][i][m], s["image"])
        assert torch.equal(batch["channels"][i][m], s["channels"])
        assert torch.all(batch["image"][i][~m] == 0)  # padding is zeros


def test_shared_channels_only_for_regular_batches():
    same = pad_channels_collate([_sample([3, 1, 2]), _sample([3, 1, 2], seed=1)])
    assert shared_channels(same).tolist() == [3, 1, 2]
    reordered = pad_channels_collate([_sample([3, 1, 2]), _sample([1, 3, 2], seed=1)])
    assert shared_channels(reordered) is None
    padded = pad_channels_collate([_sample([0, 1, 2]), _sample([3, 4, 5, 6], seed=1)])
    assert shared_channels(padded) is None


def test_extra_keys_are_listed():
    batch = pad_channels_collate([{**_sample([0]), "chunk": "Allen"}, {**_sample([1, 2]), "chunk": "HPA"}])
    assert batch["chunk"] == ["Allen", "HPA"]


def test_bad_batches_name_the_sample():
    with pytest.raises(DataError, match="sample 1 image is"):
        pad_channels_collate([_sample([0, 1], size=4), _sample([0, 1], size=5)])
    bad = _sample([0, 1])
    bad["channels"] = torch.tensor([0, 1, 2])
    with pytest.raises(DataError, match="sample 0 has 2 image channels but 3 channel ids"):
        pad_channels_collate([bad])
