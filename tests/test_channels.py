import pytest
from hypothesis import given
from hypothesis import strategies as st

from geovit.channels import PRESETS, SO2SAT_BANDS, TABLES, resolve_channels
from geovit.errors import GeovitError


def test_presets():
    assert resolve_channels("so2sat").ids == tuple(range(18))
    assert resolve_channels("sentinel1").ids == tuple(range(8))
    assert resolve_channels("sentinel2").ids == tuple(range(8, 18))
    assert resolve_channels("jumpcp").names[:5] == ("Mito", "AGP", "RNA", "ER", "DNA")
    assert len(resolve_channels("rgb")) == 3


@given(st.lists(st.sampled_from(SO2SAT_BANDS), min_size=1, max_size=18, unique=True))
def test_comma_list_round_trips(names):
    sel = resolve_channels(",".join(names))
    assert sel.table == "so2sat" and sel.names == tuple(names)
    assert [SO2SAT_BANDS[i] for i in sel.ids] == names


@pytest.mark.parametrize("spec, match", [
    ("landsat", "neither a preset"),
    ("S2_B04,S2_B04", "listed twice"),
    ("S2_B04,Mito", "unknown channel name 'Mito' for table 'so2sat', and not one of its presets"),
    ("", "empty channel list"),
])
def test_errors(spec, match):
    with pytest.raises(GeovitError, match=match):
        resolve_channels(spec)


def test_every_preset_resolves():
    for name, (table, _) in PRESETS.items():
        assert resolve_channels(name).table == table in TABLES


def test_require_fits_names_ids_outside_the_table():
    sel = resolve_channels("sentinel2")
    sel.require_fits(18)
    with pytest.raises(GeovitError, match=r"--channels sentinel2: channel ids \[10, 11, 12, 13, 14, 15, 16, 17\] fall outside .*in_chans=10"):
        sel.require_fits(10, "sentinel2")
