"""The dataset registry: one entry per dataset geovit (or a plugin) can read, train on and fake.

Each entry is a :class:`DatasetInfo` naming, as ``"module:attribute"`` strings imported only on
demand, the dataset class, its LightningDataModule and its synthetic-data writer. Other packages
add entries through the entry-point group ``geovit.datasets``, whose value is a sequence of
:class:`DatasetInfo` (geovit's ``pdes`` package registers its fluid data sets this way)::

    [project.entry-points."geovit.datasets"]
    mypkg = "mypkg.data:DATASETS"

:func:`resolve_data` is the single "no data given: use a synthetic set" fallback of every
training command: it writes the registered synthetic set once under ``out/synthetic_data/<name>``
and says so on every line it prints.

Public API::

    register_dataset(info)            # warns (UserWarning) when the name is taken
    get_dataset("so2sat") -> DatasetInfo
    list_datasets() -> ["chammi", "clcd", ...]
    resolve_data("so2sat", data=None, out=Path("runs/x"), num_samples=64) -> (root, synthetic)
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from geovit.errors import GeovitError

#: Every message about generated data starts with this, so no one mistakes it for the release.
SYNTHETIC_BANNER = "[SYNTHETIC DATA]"
#: Written last into a synthetic set's folder: what was written (dataset, num_samples, seed, options).
MARKER = ".geovit_synthetic.json"
#: Entry-point group through which other packages register datasets.
ENTRY_POINT_GROUP = "geovit.datasets"


@dataclass(frozen=True)
class DatasetInfo:
    """How to read, load as a DataModule and fake one dataset.

    Args:
        name: registry name, e.g. ``"so2sat"``.
        dataset: ``"module:Class"`` of the dataset, e.g. ``"geovit.data.so2sat:So2Sat"``.
        datamodule: ``"module:Class"`` of its LightningDataModule.
        synthetic: ``"module:function"`` of the writer
            ``write(root, *, num_samples=None, seed=0, **options) -> Path`` that writes a small
            synthetic set in the real on-disk format and returns its root. A writer whose
            module has a ``marker_defaults`` dict (e.g. the name and version of its default
            generator) gets those entries recorded in the marker too, so a folder written by an
            older generator is written again.
        channel_table: key of ``geovit.channels.TABLES`` the channel ids index, or ``None``.
        splits: the dataset class's names of the (train, validation, test) splits.
        description: one line for listings and messages.

    >>> get_dataset("so2sat").splits
    ('train', 'validation', 'test')
    """

    name: str
    dataset: str
    datamodule: str
    synthetic: str
    channel_table: str | None
    splits: tuple[str, str, str]
    description: str

    def load(self, field: str) -> Any:
        """Import the object named by ``field`` (``"dataset"``, ``"datamodule"`` or ``"synthetic"``).

        Args:
            field: which of the three ``"module:attribute"`` fields to import.

        Returns:
            The class or function it names.

        Raises:
            GeovitError: ``field`` is not one of the three, or its module / attribute is missing.

        >>> get_dataset("levircd").load("dataset").__name__
        'LEVIRCD'
        """
        if field not in ("dataset", "datamodule", "synthetic"):
            raise GeovitError(f"DatasetInfo.load: field {field!r}; expected 'dataset', 'datamodule' or 'synthetic'")
        target = getattr(self, field)
        module, _, attr = target.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise GeovitError(f"dataset {self.name!r}: {field}={target!r} cannot be imported ({err})") from None


def _check(info: DatasetInfo) -> None:
    if not isinstance(info, DatasetInfo):
        raise GeovitError(f"register_dataset: expected a DatasetInfo, got {type(info).__name__}")
    if not info.name or not isinstance(info.name, str) or info.name != info.name.strip():
        raise GeovitError(f"register_dataset: name={info.name!r}; expected a non-empty name without spaces around it")
    for field in ("dataset", "datamodule", "synthetic"):
        module, sep, attr = str(getattr(info, field)).partition(":")
        if not (module and sep and attr):
            raise GeovitError(f"register_dataset({info.name!r}): {field}={getattr(info, field)!r}; "
                              "expected 'module:attribute'")
    if not isinstance(info.splits, tuple) or len(info.splits) != 3:
        raise GeovitError(f"register_dataset({info.name!r}): splits={info.splits!r}; "
                          "expected a (train, validation, test) tuple of split names")


_REGISTRY: dict[str, DatasetInfo] = {}
_plugins_loaded = False


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add ``info`` to the registry; a later entry with the same name replaces the earlier one.

    Args:
        info: the entry.

    Returns:
        ``info`` (so the call can be used as an expression).

    Raises:
        GeovitError: ``info`` is not a well-formed :class:`DatasetInfo`.

    Warns:
        UserWarning: another entry of that name was registered before.
    """
    _check(info)
    old = _REGISTRY.get(info.name)
    if old is not None and old != info:
        warnings.warn(f"dataset {info.name!r} is registered again: {info.dataset} replaces {old.dataset}",
                      UserWarning, stacklevel=2)
    _REGISTRY[info.name] = info
    return info


def _load_plugins() -> None:
    """Register the entries of every installed ``geovit.datasets`` entry point (once per process)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from geovit.plugins import load_entry_points

    for plugin, entries in load_entry_points(ENTRY_POINT_GROUP).items():
        if isinstance(entries, (str, bytes, DatasetInfo)) or not isinstance(entries, Iterable):
            raise GeovitError(f"plugin {plugin!r} ({ENTRY_POINT_GROUP}): expected a sequence of "
                              f"geovit.data.registry.DatasetInfo, got {type(entries).__name__}")
        for info in entries:
            if not isinstance(info, DatasetInfo):
                raise GeovitError(f"plugin {plugin!r} ({ENTRY_POINT_GROUP}): holds a {type(info).__name__}; "
                                  "expected geovit.data.registry.DatasetInfo entries")
            register_dataset(info)


def list_datasets() -> list[str]:
    """Sorted names of every registered dataset: geovit's own and the plugins'.

    Returns:
        The names.

    Raises:
        GeovitError: an installed plugin fails to load or registers something else than DatasetInfo.

    >>> {"so2sat", "levircd", "whucd", "clcd"} <= set(list_datasets())
    True
    """
    _load_plugins()
    return sorted(_REGISTRY)


def get_dataset(name: str) -> DatasetInfo:
    """The registry entry of ``name``.

    Args:
        name: a registered dataset name (see :func:`list_datasets`).

    Returns:
        Its :class:`DatasetInfo`.

    Raises:
        GeovitError: no dataset of that name is registered (the message lists the known ones).

    >>> get_dataset("jumpcp").channel_table
    'jumpcp'
    """
    if name not in _REGISTRY:
        _load_plugins()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise GeovitError(f"unknown dataset {name!r}; expected one of {', '.join(sorted(_REGISTRY))}") from None


# -- the synthetic fallback -------------------------------------------------------------------------
def _read_marker(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or unreadable: the set is written again


def resolve_data(name: str, data: str | os.PathLike | None, out: str | os.PathLike, *,
                 num_samples: int | None = None, seed: int = 0, log: Callable[[str], Any] = print,
                 **synth_kwargs: Any) -> tuple[Path, bool]:
    """The dataset root to train on: ``data`` when given, else a synthetic set written once.

    Without ``data``, the registered writer of ``name`` fills ``out/synthetic_data/<name>``,
    and a marker file (:data:`MARKER`, JSON ``{dataset, num_samples, seed, **defaults,
    **synth_kwargs}``, with ``defaults`` the writer module's ``marker_defaults``) is written last. A later call with the same arguments reuses the folder; a call whose marker
    differs (other seed, size or options) or is missing (an interrupted write) writes the set
    again. The set is written into a temporary sibling folder and then put in place, so the
    folder never mixes files of two settings. That folder belongs to geovit: it is replaced whole.
    Every message passed to ``log`` starts with :data:`SYNTHETIC_BANNER`.

    Args:
        name: registered dataset name.
        data: dataset folder (or file) given by the user, or ``None`` for the synthetic fallback.
        out: the run's output folder.
        num_samples: size of the synthetic set (``None``: the writer's default).
        seed: seed of the synthetic set.
        log: where the messages go (``print`` by default).
        **synth_kwargs: further writer options (e.g. ``version="3_random"`` for So2Sat); they
            must be JSON-serialisable, as they are recorded in the marker.

    Returns:
        ``(root, synthetic)``: the folder to read and whether it holds synthetic data.

    Raises:
        GeovitError: ``name`` is unknown, ``data`` does not exist, or ``synth_kwargs`` cannot be
            recorded as JSON.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> root, synthetic = resolve_data("levircd", None, out, num_samples=3, log=lambda m: None, size=32)
    >>> synthetic, root == out / "synthetic_data" / "levircd"
    (True, True)
    """
    info = get_dataset(name)
    if data is not None:
        root = Path(data)
        if not root.exists():
            raise GeovitError(f"data={str(data)!r}: not found; expected the folder of the {name} dataset "
                              f"({info.description})")
        return root, False
    root = Path(out) / "synthetic_data" / name
    defaults = _marker_defaults(info)
    try:
        wanted = json.loads(json.dumps({"dataset": name, "num_samples": num_samples, "seed": seed, **defaults,
                                        **synth_kwargs}))
    except (TypeError, ValueError) as err:
        raise GeovitError(f"resolve_data({name!r}): synthetic-data options {synth_kwargs!r} are not "
                          f"JSON-serialisable ({err}); expected numbers, strings, lists or dicts") from None
    if _read_marker(root / MARKER) != wanted:
        log(f"{SYNTHETIC_BANNER} no data given: writing a synthetic {name}-format set to {root} ({info.description})")
        _write_once(info, root, wanted, num_samples=num_samples, seed=seed, **synth_kwargs)
    log(f"{SYNTHETIC_BANNER} using synthetic {name}-format data in {root} (not the real release)")
    return root, True


def _marker_defaults(info: DatasetInfo) -> dict[str, Any]:
    """The ``marker_defaults`` of the writer's module (``{}`` when it has none)."""
    module = importlib.import_module(info.synthetic.partition(":")[0]) if info.synthetic else None
    defaults = getattr(module, "marker_defaults", None)
    return dict(defaults) if isinstance(defaults, dict) else {}


def _write_once(info: DatasetInfo, root: Path, wanted: dict, **kwargs: Any) -> None:
    """Write the set into a fresh sibling folder, record the marker, then swap it in for ``root``."""
    from geovit._io import atomic_write_text

    root.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        info.load("synthetic")(partial, **kwargs)
        atomic_write_text(partial / MARKER, json.dumps(wanted) + "\n")
        if root.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, old / root.name)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(partial, root)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)


# -- geovit's datasets ---------------------------------------------------------------------------
_DM = "geovit.data.datamodules"
for _info in (
    DatasetInfo("so2sat", "geovit.data.so2sat:So2Sat", f"{_DM}:So2SatDataModule",
                "geovit.data.so2sat_synthetic:write_synthetic", "so2sat", ("train", "validation", "test"),
                "So2Sat LCZ42: Sentinel-1/2 32x32 patches, 17 local climate zones"),
    DatasetInfo("jumpcp", "geovit.data.jumpcp:JUMPCP", f"{_DM}:JUMPCPDataModule", "geovit.data.jumpcp:write_synthetic",
                "jumpcp", ("train", "valid", "test"),
                "JUMP-CP single cells: 5 fluorescence + 3 brightfield channels"),
    DatasetInfo("chammi", "geovit.data.chammi:CHAMMI", f"{_DM}:CHAMMIDataModule", "geovit.data.chammi:write_synthetic",
                "chammi", ("Train", "Task_one", "Task_one"),
                "CHAMMI single cells with 3, 4 or 5 channels (Allen, HPA, CP)"),
    DatasetInfo("levircd", "geovit.data.levircd:LEVIRCD", f"{_DM}:LEVIRCDDataModule",
                "geovit.data.levircd:write_synthetic", "rgb", ("train", "val", "test"), "LEVIR-CD building change detection, RGB image pairs"),
    DatasetInfo("whucd", "geovit.data.levircd:WHUCD", f"{_DM}:LEVIRCDDataModule", "geovit.data.levircd:write_synthetic",
                "rgb", ("train", "val", "test"), "WHU-CD building change detection, RGB image pairs"),
    DatasetInfo("clcd", "geovit.data.levircd:CLCD", f"{_DM}:LEVIRCDDataModule", "geovit.data.levircd:write_synthetic",
                "rgb", ("train", "val", "test"), "CLCD cropland change detection, RGB image pairs"),
):
    register_dataset(_info)
del _info
