"""Channel tables and presets: the one place that names channels.

A *channel table* is the ordered list of every channel a model family knows; a channel's
absolute id is its position in the table (the row of the channel-embedding table).
A *preset* names a subset of one table. ``--channels`` on the command line takes a preset
name or a comma-separated list of channel names from one table.
"""
from __future__ import annotations

from dataclasses import dataclass

from geovit.errors import GeovitError

#: So2Sat LCZ42: Sentinel-1 (8, torchgeo's names; meaning in data_cards/so2sat_lcz42.md)
#: then Sentinel-2 (10), in the order the loader concatenates them.
SO2SAT_BANDS: tuple[str, ...] = (
    "S1_B1", "S1_B2", "S1_B3", "S1_B4", "S1_B5", "S1_B6", "S1_B7", "S1_B8",
    "S2_B02", "S2_B03", "S2_B04", "S2_B05", "S2_B06", "S2_B07", "S2_B08", "S2_B8A",
    "S2_B11", "S2_B12",
)

#: JUMP-CP as released for ChannelViT: 5 fluorescence then 3 brightfield channels.
JUMPCP_CHANNELS: tuple[str, ...] = (
    "Mito", "AGP", "RNA", "ER", "DNA", "HighZBF", "LowZBF", "Brightfield",
)

#: Plain RGB imagery (aerial / change detection).
RGB_CHANNELS: tuple[str, ...] = ("red", "green", "blue")

TABLES: dict[str, tuple[str, ...]] = {
    "so2sat": SO2SAT_BANDS,
    "jumpcp": JUMPCP_CHANNELS,
    "rgb": RGB_CHANNELS,
}

#: preset name -> (table name, channel names in order)
PRESETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "so2sat": ("so2sat", SO2SAT_BANDS),
    "sentinel1": ("so2sat", SO2SAT_BANDS[:8]),
    "sentinel2": ("so2sat", SO2SAT_BANDS[8:]),
    # True-colour composite of So2Sat's Sentinel-2 bands (B04, B03, B02), as torchgeo's 'rgb'.
    "so2sat_rgb": ("so2sat", ("S2_B04", "S2_B03", "S2_B02")),
    "rgb": ("rgb", RGB_CHANNELS),
    "jumpcp": ("jumpcp", JUMPCP_CHANNELS),
    "jumpcp_fluorescence": ("jumpcp", JUMPCP_CHANNELS[:5]),
    "jumpcp_brightfield": ("jumpcp", JUMPCP_CHANNELS[5:]),
}


@dataclass(frozen=True)
class ChannelSelection:
    """A resolved channel set: the table it indexes, the names and their absolute ids."""

    table: str
    names: tuple[str, ...]
    ids: tuple[int, ...]

    @property
    def num_table_channels(self) -> int:
        """Number of channels of the whole table the ids index."""
        return len(TABLES[self.table])

    def __len__(self) -> int:
        return len(self.ids)

    def require_fits(self, in_chans: int, spec: str | None = None) -> None:
        """Raise if a model whose channel table holds ``in_chans`` rows cannot embed these ids."""
        bad = [i for i in self.ids if i >= in_chans]
        if bad:
            raise GeovitError(f"--channels {spec or self.table}: channel ids {bad} fall outside the model's channel "
                              f"table (in_chans={in_chans}); expected ids < {in_chans}")


def register_table(name: str, channels: tuple[str, ...], presets: dict[str, tuple[str, ...]] | None = None) -> None:
    """Add a channel table (and presets over it), e.g. from a data module."""
    TABLES[name] = tuple(channels)
    PRESETS.setdefault(name, (name, tuple(channels)))
    for preset, names in (presets or {}).items():
        PRESETS[preset] = (name, tuple(names))


def _lookup(table: str, name: str) -> int:
    lowered = [c.lower() for c in TABLES[table]]
    try:
        return lowered.index(name.lower())
    except ValueError:
        presets = [p for p, (t, _) in PRESETS.items() if t == table]
        raise GeovitError(
            f"--channels: unknown channel name {name!r} for table {table!r}, and not one of its presets "
            f"({', '.join(presets)}); expected channel names from {', '.join(TABLES[table])}"
        ) from None


def resolve_channels(spec: str | list[str] | tuple[str, ...], table: str | None = None) -> ChannelSelection:
    """Resolve a preset name or a comma list of channel names to absolute ids.

    >>> resolve_channels("sentinel1").ids
    (0, 1, 2, 3, 4, 5, 6, 7)
    >>> resolve_channels("S2_B04,S2_B03").ids
    (10, 9)
    """
    if isinstance(spec, str):
        if spec in PRESETS and "," not in spec:
            tname, names = PRESETS[spec]
            if table is not None and tname != table:
                raise GeovitError(
                    f"--channels: preset {spec!r} belongs to table {tname!r}, but this model/data uses {table!r}"
                )
            return ChannelSelection(tname, names, tuple(_lookup(tname, n) for n in names))
        parts = [p.strip() for p in spec.split(",") if p.strip()]
    else:
        parts = list(spec)
    if not parts:
        raise GeovitError("--channels: empty channel list; expected a preset "
                          f"({', '.join(PRESETS)}) or comma-separated channel names")
    if table is None:
        owners = [t for t, chans in TABLES.items() if parts[0].lower() in {c.lower() for c in chans}]
        if not owners:
            raise GeovitError(
                f"--channels: {parts[0]!r} is neither a preset ({', '.join(PRESETS)}) "
                f"nor a channel name of any table ({', '.join(TABLES)})"
            )
        table = owners[0]
    ids = tuple(_lookup(table, p) for p in parts)
    if len(set(ids)) != len(ids):
        raise GeovitError(f"--channels: channel listed twice in {spec!r}")
    return ChannelSelection(table, tuple(TABLES[table][i] for i in ids), ids)
