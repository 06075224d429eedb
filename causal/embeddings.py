"""Multi-scale image embeddings of geolocated units (steps 1-4 of the multi-scale procedure).

Zhu, Jerzak & Daoud (CLeaR 2025, arXiv 2411.02134), "a family of composable procedures"
(``specs/multiscale_cate.md`` §1): for every unit take K square crops of widths s_1 < … < s_K
pixels centred on its location, encode each with the same *frozen* encoder, z_k = f(crop_k), and
feed the concatenation x = [z_1, …, z_K] (optionally PCA-compressed) to an unchanged CATE
estimator. The members of the family exposed here:

* single scales and the concatenation of any subset (:func:`combine`, :func:`feature_sets`);
* PCA, fitted per scale before concatenating or once on the concatenation (``pca_mode``),
  on unlabeled embeddings of all units (no outcome is used, so this is not leakage);
* the "sampled" variant of the official simulation code: several randomly displaced small crops
  (GPS jitter) column-stacked with the large crop (:func:`sampled_features`).

Pipeline: :func:`open_raster` (a GeoTIFF read with rasterio, or a zarr / xarray cube with
dimensions (band, y, x)) → :func:`unit_positions` (unit coordinates reprojected to the raster's
CRS with pyproj) → windows read and padded at the raster edges → resized to the encoder's input
(bilinear, antialiased) → :class:`FrozenEncoder` (a geovit backbone with its channel ids, any
timm model, or any ``nn.Module``), batched, with a progress bar, on CUDA when present → an
``xarray.Dataset`` with ``embedding`` (unit × scale × feature). With ``cache=DIR`` every scale
is stored as its own zarr store (written to a temporary folder, then renamed), keyed by the
raster file, the unit positions, the encoder's weights and the preprocessing, so re-running with
an extra scale encodes only that scale.

Reusing a scene's embeddings instead of re-encoding: ``raster`` may also be an embedding store
written by ``geovit embed CKPT --raster ... --out emb.zarr`` (or a list of them, one per crop
width), see :func:`store_features`. Each unit then takes the embedding of the store's window
whose centre is nearest to it (no interpolation between windows: an embedding is one encoder
pass over one window); the crop width of a store is its window size.
"""
from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from geovit.errors import DataError, GeovitError

__all__ = [
    "RasterSource", "open_raster", "unit_positions", "FrozenEncoder", "TinyConvEncoder", "load_encoder",
    "embed_units", "store_features", "embedding_stores", "combine", "sampled_features", "feature_sets",
    "scale_arrays", "scale_label",
]


# --------------------------------------------------------------------------------------------
# Rasters
# --------------------------------------------------------------------------------------------
@dataclass
class RasterSource:
    """A georeferenced image: ``read(row_off, col_off, size)`` returns (bands, size, size) float32.

    Pixels outside the raster and nodata pixels come back as NaN (see ``on_nodata`` of
    :func:`embed_units` for what happens to them). ``transform`` is an ``affine.Affine`` from
    pixel (col, row) to CRS (x, y).
    """

    name: str
    crs: object  # pyproj.CRS
    transform: object
    height: int
    width: int
    count: int
    band_names: tuple[str, ...]
    _reader: object = field(repr=False, default=None)
    _fingerprint: str = ""

    def read(self, row_off: int, col_off: int, size: int) -> np.ndarray:
        """A ``size`` x ``size`` window whose upper-left pixel is ``(row_off, col_off)``; may reach past the edges.

        Args:
            row_off: first row (negative: above the raster).
            col_off: first column.
            size: window side in pixels.

        Returns:
            float32 ``(bands, size, size)``, NaN outside the raster and at nodata pixels.
        """
        out = np.full((self.count, size, size), np.nan, dtype=np.float32)
        r0, c0 = max(row_off, 0), max(col_off, 0)
        r1, c1 = min(row_off + size, self.height), min(col_off + size, self.width)
        if r1 > r0 and c1 > c0:
            out[:, r0 - row_off:r1 - row_off, c0 - col_off:c1 - col_off] = self._reader(r0, c0, r1, c1)
        return out

    def overview(self, max_side: int = 1024) -> np.ndarray:
        """A decimated (bands, h, w) view of the whole raster, for band statistics."""
        step = max(1, int(np.ceil(max(self.height, self.width) / max_side)))
        return self._reader(0, 0, self.height, self.width, step)

    def fingerprint(self) -> str:
        """Identity of the raster's content (file path, size and mtime; a cube's grid), part of cache keys."""
        return self._fingerprint


def _as_crs(value, where: str):
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        return CRS.from_user_input(value)
    except CRSError as err:
        raise DataError(f"{where}: {value!r} is not a coordinate reference system ({err})") from None


def _open_geotiff(path: Path) -> RasterSource:
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioIOError
    from rasterio.windows import Window

    try:
        ds = rasterio.open(path)
    except RasterioIOError as err:
        raise DataError(f"raster {path}: not readable by rasterio ({err})") from None
    if ds.crs is None:
        raise DataError(f"raster {path}: has no CRS; expected a georeferenced GeoTIFF")
    nodata = ds.nodata

    def reader(r0, c0, r1, c1, step=1):
        window = Window(c0, r0, c1 - c0, r1 - r0)
        shape = (ds.count, -(-(r1 - r0) // step), -(-(c1 - c0) // step))
        arr = ds.read(window=window, out_dtype="float32",
                      out_shape=None if step == 1 else shape, resampling=Resampling.nearest)
        if nodata is not None:
            arr[arr == nodata] = np.nan
        return arr

    stat = path.stat()
    names = tuple(d or f"band{i + 1}" for i, d in enumerate(ds.descriptions))
    return RasterSource(str(path), _as_crs(ds.crs.to_wkt(), f"raster {path}"), ds.transform, ds.height, ds.width,
                        ds.count, names, reader, f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")


def _cube_crs(da, crs, where: str):
    if crs is not None:
        return _as_crs(crs, where)
    for key in ("crs", "crs_wkt", "spatial_ref"):
        if key in da.attrs:
            return _as_crs(da.attrs[key], f"{where} attribute {key!r}")
    if "spatial_ref" in da.coords:
        attrs = da.coords["spatial_ref"].attrs
        for key in ("crs_wkt", "spatial_ref"):
            if key in attrs:
                return _as_crs(attrs[key], f"{where} coordinate 'spatial_ref'")
    raise DataError(f"{where}: no CRS found; expected an attribute 'crs' / 'crs_wkt', a 'spatial_ref' "
                    "coordinate (CF convention), or pass crs=")


def _open_cube(obj, name: str, variable: str | None, crs) -> RasterSource:
    import xarray as xr

    if isinstance(obj, xr.Dataset):
        names = list(obj.data_vars)
        if variable is None:
            if len(names) != 1:
                raise DataError(f"cube {name}: holds variables {names}; pass variable= to choose one")
            variable = names[0]
        if variable not in obj:
            raise DataError(f"cube {name}: no variable {variable!r}; it has {names}")
        da = obj[variable]
    else:
        da = obj
    from geovit.geo.scene import cube_grid

    da, transform = cube_grid(da, name)
    fill = da.attrs.get("_FillValue", da.attrs.get("nodata"))

    def reader(r0, c0, r1, c1, step=1):
        arr = np.asarray(da[:, r0:r1:step, c0:c1:step].values, dtype=np.float32)
        if fill is not None:
            arr[arr == fill] = np.nan
        return arr

    band_dim = da.dims[0]
    bands = (tuple(str(b) for b in da[band_dim].values) if band_dim in da.coords
             else tuple(f"band{i + 1}" for i in range(da.shape[0])))
    digest = hashlib.sha1(repr(tuple(transform)).encode())  # the regular grid: origin and pixel size
    digest.update(str(da.shape).encode())
    return RasterSource(name, _cube_crs(da, crs, f"cube {name}"), transform, da.shape[1], da.shape[2],
                        da.shape[0], bands, reader, f"{name}:{digest.hexdigest()}")


def open_raster(raster, *, variable: str | None = None, crs=None) -> RasterSource:
    """Open a GeoTIFF path, a zarr store path, or an ``xarray`` DataArray / Dataset cube.

    Cubes need dimensions (band, y, x) (or (y, x)) with regular 1-D coordinates in a CRS given by
    ``crs=`` or found in the attributes (``crs`` / ``crs_wkt`` / a CF ``spatial_ref`` coordinate).
    """
    import xarray as xr

    if isinstance(raster, RasterSource):
        return raster
    if isinstance(raster, (xr.DataArray, xr.Dataset)):
        return _open_cube(raster, getattr(raster, "name", None) or "<xarray>", variable, crs)
    path = Path(raster)
    if not path.exists():
        raise DataError(f"raster {path}: file not found")
    if path.is_dir() or path.suffix == ".zarr":
        from geovit.geo.scene import open_zarr_store

        return _open_cube(open_zarr_store(path, f"raster {path}"), str(path), variable, crs)
    return _open_geotiff(path)


# --------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------
def unit_positions(
    units: pd.DataFrame,
    source: RasterSource,
    *,
    id_col: str = "unit_id",
    lon_col: str = "lon",
    lat_col: str = "lat",
    x_col: str | None = None,
    y_col: str | None = None,
    units_crs="EPSG:4326",
    on_outside: str = "error",
) -> pd.DataFrame:
    """Unit positions in the raster: columns ``unit_id, x, y`` (raster CRS) and ``col, row``.

    Coordinates come from ``x_col``/``y_col`` (already in the raster's CRS) when given, else from
    ``lon_col``/``lat_col`` in ``units_crs`` (WGS84 by default), reprojected with pyproj.
    ``col``/``row`` are continuous pixel coordinates (a pixel's corner is an integer).
    Units whose location falls outside the raster are named in the error (``on_outside="error"``)
    or dropped with a warning naming them (``"skip"``).
    """
    from pyproj import Transformer

    if on_outside not in ("error", "skip"):
        raise GeovitError(f"on_outside must be 'error' or 'skip', got {on_outside!r}")
    cols = [id_col] + ([x_col, y_col] if x_col or y_col else [lon_col, lat_col])
    missing = [c for c in cols if c is None or c not in units.columns]
    if missing:
        raise DataError(f"units table: missing column(s) {missing}; it has {list(units.columns)}")
    ids = units[id_col].astype(str).to_numpy()
    dup = pd.Index(ids)[pd.Index(ids).duplicated()].unique().tolist()
    if dup:
        raise DataError(f"units table: column {id_col!r} has duplicated ids {dup[:10]}")
    if x_col or y_col:
        x = pd.to_numeric(units[x_col], errors="coerce").to_numpy(float)
        y = pd.to_numeric(units[y_col], errors="coerce").to_numpy(float)
    else:
        lon = pd.to_numeric(units[lon_col], errors="coerce").to_numpy(float)
        lat = pd.to_numeric(units[lat_col], errors="coerce").to_numpy(float)
        tr = Transformer.from_crs(_as_crs(units_crs, "units_crs"), source.crs, always_xy=True)
        x, y = tr.transform(lon, lat)
        x, y = np.asarray(x, float), np.asarray(y, float)
    inv = ~source.transform
    col, row = inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f
    inside = np.isfinite(col) & np.isfinite(row) & (col >= 0) & (col < source.width) & (row >= 0) & (row < source.height)
    if not inside.all():
        bad = ids[~inside].tolist()
        listing = ", ".join(bad[:20]) + (f" … ({len(bad)} in all)" if len(bad) > 20 else "")
        msg = (f"{len(bad)} unit(s) lie outside raster {source.name} or have missing coordinates: {listing}")
        if on_outside == "error":
            raise DataError(msg + "; fix their coordinates or pass on_outside='skip' (CLI: --outside skip)")
        warnings.warn(msg + "; they are skipped", stacklevel=2)
    return pd.DataFrame({"unit_id": ids, "x": x, "y": y, "col": col, "row": row})[inside].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------------------------
class TinyConvEncoder(nn.Module):
    """A small fixed-seed random convolutional feature extractor (a deterministic baseline).

    conv3×3 → ReLU → avg-pool 2 → conv3×3 → ReLU → adaptive avg-pool to ``grid``×``grid``,
    flattened: ``width·grid²`` features that keep coarse spatial layout (centre vs surroundings).
    Useful for tests, the simulation study and as a no-download default; for real analyses pass a
    pretrained backbone.
    """

    def __init__(self, in_chans: int = 3, width: int = 16, grid: int = 4, seed: int = 0):
        super().__init__()
        self.config = {"in_chans": in_chans, "width": width, "grid": grid, "seed": seed}
        gen = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(in_chans, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                fan_in = conv.weight[0].numel()
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                conv.bias.copy_(0.1 * torch.randn(conv.bias.shape, generator=gen))
        self.pool = nn.AdaptiveAvgPool2d(grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a batch of images.

        Args:
            x: ``(B, in_chans, H, W)``.

        Returns:
            ``(B, width * grid**2)``.
        """
        h = F.avg_pool2d(F.relu(self.conv1(x)), 2)
        return self.pool(F.relu(self.conv2(h))).flatten(1)


class FrozenEncoder:
    """A frozen image encoder: (B, C, H, W) crops → (B, D) embeddings, on one device.

    Crops are resized to ``input_size`` (bilinear, antialiased). ``channel_ids`` (absolute ids
    into a geovit channel table) are passed to backbones whose ``forward`` accepts
    ``channels=`` (geovit's ChannelViT), ``channel_ids=`` or ``extra_tokens={"channels": ids}``. Outputs that are token sequences
    (B, N, D) are mean-pooled, feature maps (B, D, h, w) average-pooled.
    """

    def __init__(self, model: nn.Module, *, input_size: int, name: str = "", channel_ids: Sequence[int] | None = None,
                 device: str | torch.device | None = None):
        try:
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        except RuntimeError:
            raise GeovitError(f"--device {device!r}: expected cpu, cuda or cuda:N") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise GeovitError(f"--device {device}: no CUDA device is available on this machine")
        self.model = model.eval().to(self.device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.input_size = int(input_size)
        self.name = name or type(model).__name__
        self.channel_ids = None if channel_ids is None else tuple(int(i) for i in channel_ids)
        params = inspect.signature(model.forward).parameters
        self._ids_kw = next((k for k in ("channels", "channel_ids", "extra_tokens") if k in params), None)
        self._fp: str | None = None

    def fingerprint(self) -> str:
        """SHA-1 of the encoder's name, weights and preprocessing (part of the cache key)."""
        if self._fp is None:
            h = hashlib.sha1(f"{self.name}|{self.input_size}|{self.channel_ids}".encode())
            for key, tensor in self.model.state_dict().items():
                h.update(key.encode())
                h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            self._fp = h.hexdigest()
        return self._fp

    @torch.no_grad()
    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        x = crops.to(self.device, torch.float32)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.input_size)
        kwargs = {}
        if self.channel_ids is not None and self._ids_kw is not None:
            ids = torch.tensor(self.channel_ids, device=self.device).expand(x.shape[0], -1)
            kwargs = {"extra_tokens": {"channels": ids}} if self._ids_kw == "extra_tokens" else {self._ids_kw: ids}
        out = self.model(x, **kwargs)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if isinstance(out, Mapping):
            out = next(iter(out.values()))
        if out.ndim == 3:
            out = out.mean(dim=1)
        elif out.ndim == 4:
            out = out.mean(dim=(2, 3))
        return out.float().cpu()


def _model_input_size(model: nn.Module) -> int | None:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    if "input_size" in cfg:
        return int(cfg["input_size"][-1])
    config = getattr(model, "config", None)
    if isinstance(config, Mapping) and "img_size" in config:
        size = config["img_size"]
        return int(size[-1] if isinstance(size, (list, tuple)) else size)
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if size is not None:
        return int(size[-1] if isinstance(size, (list, tuple)) else size)
    return None


def load_encoder(
    spec: str | nn.Module | FrozenEncoder | None = None,
    *,
    in_chans: int = 3,
    channels: str | Sequence[str] | None = None,
    input_size: int | None = None,
    device: str | None = None,
) -> FrozenEncoder:
    """Build the frozen encoder named by ``spec``.

    * ``None`` / ``"tiny"``: :class:`TinyConvEncoder` (fixed seed, 32 px input);
    * a path to a ``.safetensors`` file written by ``geovit.hub.save_converted`` (any geovit
      backbone, e.g. a converted ChannelViT checkpoint);
    * a geovit model name (``"channelvit_small_patch8"``), built with ``in_chans``;
    * ``"timm:NAME"``: a timm model with ``num_classes=0`` (pooled features), random init unless
      the weights are in the local timm cache (``"timm:NAME:pretrained"``);
    * an ``nn.Module`` (its input size is read from its config or ``input_size=``).

    ``channels`` (a geovit preset or names, e.g. ``"rgb"``) gives the absolute channel ids that
    channel-adaptive backbones (ChannelViT) need.
    """
    if isinstance(spec, FrozenEncoder):
        return spec
    channel_ids = None
    if channels is not None:
        from geovit.channels import resolve_channels

        channel_ids = resolve_channels(channels).ids
        if len(channel_ids) != in_chans:
            raise GeovitError(f"channels {channels!r} name {len(channel_ids)} channels but the raster has {in_chans} bands")
    name = ""
    if spec is None or spec == "tiny":
        model, name, input_size = TinyConvEncoder(in_chans), "tiny", input_size or 32
    elif isinstance(spec, nn.Module):
        model = spec
    elif isinstance(spec, (str, os.PathLike)) and str(spec).endswith(".safetensors"):
        from geovit.hub import load_converted

        model, name = load_converted(spec), f"geovit:{Path(spec).name}"
    elif isinstance(spec, str) and spec.startswith("timm:"):
        import timm

        parts = spec.split(":")
        pretrained = len(parts) > 2 and parts[2] == "pretrained"
        try:
            model = timm.create_model(parts[1], pretrained=pretrained, num_classes=0, in_chans=in_chans)
        except Exception as err:  # unknown name, no network for weights ...
            raise GeovitError(f"--encoder {spec!r}: timm could not build it ({err})") from None
        name = spec
    elif isinstance(spec, str):
        from geovit.models import create_model

        p = Path(spec)
        if p.suffix in (".pt", ".pth", ".ckpt", ".bin"):
            raise GeovitError(f"--encoder {spec}: convert official checkpoints first (geovit convert …) and pass "
                              "the .safetensors file, or pass a geovit model name / 'timm:NAME' / 'tiny'")
        model, name = create_model(spec, in_chans=in_chans), spec
    else:
        raise GeovitError(f"encoder: expected a name, a .safetensors path or an nn.Module, got {type(spec).__name__}")
    size = input_size or _model_input_size(model)
    if size is None:
        raise GeovitError(f"encoder {name or type(model).__name__}: cannot tell its input size; pass input_size=")
    return FrozenEncoder(model, input_size=size, name=name, channel_ids=channel_ids, device=device)


# --------------------------------------------------------------------------------------------
# Embedding with a zarr cache
# --------------------------------------------------------------------------------------------
def _band_stats(source: RasterSource) -> tuple[np.ndarray, np.ndarray]:
    view = source.overview().reshape(source.count, -1)
    mean = np.nanmean(view, axis=1)
    std = np.nanstd(view, axis=1)
    if not np.all(np.isfinite(mean)):
        raise DataError(f"raster {source.name}: a band holds only nodata")
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def _normaliser(normalize, source: RasterSource):
    """(function on a (B, C, s, s) array, JSON description for the cache key)."""
    if normalize == "zscore":
        mean, std = _band_stats(source)
        desc = {"zscore": [mean.tolist(), std.tolist()]}
    elif isinstance(normalize, (tuple, list)) and len(normalize) == 2:
        mean = np.asarray(normalize[0], np.float32)
        std = np.asarray(normalize[1], np.float32)
        if mean.shape != (source.count,) or std.shape != (source.count,):
            raise GeovitError(f"normalize=(mean, std) needs {source.count} values each (one per band)")
        desc = {"zscore": [mean.tolist(), std.tolist()]}
    elif normalize == "minmax":
        def minmax(b):  # per image, as the paper's loader (float → uint8 range → [0, 1])
            lo = np.nanmin(b, axis=(1, 2, 3), keepdims=True)
            hi = np.nanmax(b, axis=(1, 2, 3), keepdims=True)
            return np.nan_to_num((b - lo) / np.where(hi > lo, hi - lo, 1.0), nan=0.0)
        return minmax, {"minmax": True}
    elif normalize in (None, "none"):
        return (lambda b: np.nan_to_num(b, nan=0.0)), {"none": True}
    else:
        raise GeovitError(f"normalize must be 'zscore', 'minmax', 'none' or (mean, std), got {normalize!r}")
    return (lambda b: np.nan_to_num((b - mean[:, None, None]) / std[:, None, None], nan=0.0)), desc


def _window_start(centre: np.ndarray, scale: int) -> np.ndarray:
    """First pixel of the ``scale``-wide window centred on continuous pixel coordinate ``centre``.

    Rounds half up with a 1e-6 px tolerance, so reprojection round-off never moves a window:
    a unit on a pixel corner gets the symmetric window; a unit inside pixel c gets its pixel at
    index ``(scale - 1) // 2``.
    """
    return np.floor(centre - scale / 2 + 0.5 + 1e-6).astype(np.int64)


def _encode_windows(source, positions, scale, offsets, encoder, norm, batch_size, bar) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (n, d), share of each crop's pixels without data (n,)) for one crop width.

    A pixel has no data when any band is nodata / NaN or it lies outside the raster.
    """
    col0 = _window_start(positions["col"].to_numpy(), scale) + offsets[:, 0]
    row0 = _window_start(positions["row"].to_numpy(), scale) + offsets[:, 1]
    chunks, missing = [], []
    for start in range(0, len(positions), batch_size):
        stop = min(start + batch_size, len(positions))
        crops = np.stack([source.read(int(row0[i]), int(col0[i]), scale) for i in range(start, stop)])
        missing.append(np.isnan(crops).any(axis=1).mean(axis=(1, 2)))
        try:
            chunks.append(encoder(torch.from_numpy(norm(crops))).numpy())
        except torch.cuda.OutOfMemoryError:
            raise GeovitError(f"encoder {encoder.name}: out of GPU memory on {len(crops)} crops of {scale} px; "
                              "lower --batch-size") from None
        except RuntimeError as err:  # shape / channel mismatch inside the model
            raise GeovitError(f"encoder {encoder.name}: failed on {len(crops)} crops of {source.count} band(s) "
                              f"from raster {source.name} resized to {encoder.input_size} px ({err}); "
                              "does it take this many bands at this input size?") from None
        if bar is not None:
            bar.update(stop - start)
    return np.concatenate(chunks).astype(np.float32), np.concatenate(missing).astype(np.float32)


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_store(ds, path: Path) -> None:
    """Write a zarr store atomically: into a temporary folder beside ``path``, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        ds.to_zarr(tmp, mode="w", consolidated=False)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _cached(path: Path | None, compute) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, missing-pixel shares) from the zarr store at ``path``, else computed and stored."""
    import xarray as xr

    if path is not None and path.exists():
        try:
            store = xr.open_zarr(path, consolidated=False)
            return store["embedding"].values, store["missing_fraction"].values
        except Exception:  # an unreadable or older leftover: recompute and overwrite
            shutil.rmtree(path, ignore_errors=True)
    arr, missing = compute()
    if path is not None:
        dims = ("unit", "feature") if arr.ndim == 2 else ("unit", "draw", "feature")
        _write_store(xr.Dataset({"embedding": (dims, arr), "missing_fraction": (dims[:-1], missing)}), path)
    return arr, missing


def _nodata_policy(missing: np.ndarray, ids: np.ndarray, scales: list, on_nodata: str) -> np.ndarray:
    """Apply ``on_nodata`` to units whose crops lack data; returns the mask of units kept.

    ``missing`` is (n, k): the share of pixels without data of each unit's crops (one column per
    scale or jittered draw; ``scales`` labels the columns).
    """
    affected = missing.max(axis=1) > 0
    if not affected.any():
        return np.ones(len(ids), dtype=bool)
    bad = ids[affected].tolist()
    listing = ", ".join(map(str, bad[:10])) + (f" … ({len(bad)} in all)" if len(bad) > 10 else "")
    where = sorted({str(scales[j]) for j in np.flatnonzero((missing > 0).any(axis=0))}, key=str)
    msg = (f"{len(bad)} of {len(ids)} unit(s) have crops with nodata or out-of-raster pixels (up to "
           f"{missing.max():.1%} of a crop; crop widths {', '.join(where)} px): {listing}")
    if on_nodata == "skip":
        if affected.all():
            raise DataError(msg + "; with on_nodata='skip' (CLI --nodata skip) no unit is left. Use smaller crops, "
                            "a raster that covers them, or on_nodata='fill' (CLI --nodata fill)")
        warnings.warn(msg + "; they are skipped (to keep them, fill the gaps with the band mean: "
                      "on_nodata='fill', CLI --nodata fill)", stacklevel=3)
        return ~affected
    warnings.warn(msg + "; the missing pixels are filled by the normaliser (the band mean for zscore, 0 for "
                  "minmax/none)", stacklevel=3)
    return np.ones(len(ids), dtype=bool)


def embedding_stores(raster) -> list | None:
    """The window-grid embedding stores in ``raster``, or ``None`` when it is imagery.

    Args:
        raster: a path, an ``xarray`` object, a :class:`RasterSource`, or a list / tuple of store
            paths / Datasets.

    Returns:
        ``[xarray.Dataset, ...]`` when ``raster`` is a store written by ``geovit embed --raster``
        (``embedding`` variable, attribute ``kind = "window grid"``) or a list of them; ``None``
        for a GeoTIFF or a (band, y, x) cube.

    Raises:
        DataError: a list that mixes stores and imagery, or holds a dataset-split store.
    """
    import xarray as xr

    from geovit.predict.embeddings import read_embeddings

    def one(item):
        if isinstance(item, xr.Dataset):
            return item if "embedding" in item.data_vars else None
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if path.is_dir() and (path / "embedding").is_dir():
                return read_embeddings(path)
        return None

    items = list(raster) if isinstance(raster, (list, tuple)) else [raster]
    found = [one(item) for item in items]
    if all(f is None for f in found):
        if len(items) > 1:
            raise DataError(f"raster: {len(items)} inputs given; several inputs must all be embedding stores "
                            "written by geovit embed --raster (one per crop width)")
        return None
    for item, f in zip(items, found):
        name = getattr(item, "name", None) or str(item)
        if f is None:
            raise DataError(f"raster {name}: not an embedding store, but given with embedding stores; pass either "
                            "one raster or embedding stores only")
        kind = f.attrs.get("kind")
        if kind != "window grid":
            what = "holds a dataset split" if kind == "dataset split" else f"has attribute kind={kind!r}"
            raise DataError(f"embedding store {name}: {what}, not a scene's window grid (kind='window grid'); "
                            "write it with geovit embed CKPT --raster ...")
        lacking = [f"attribute {k!r}" for k in ("window", "transform", "scene_transform") if k not in f.attrs]
        lacking += [f"coordinate {k!r}" for k in ("x", "y") if k not in f.coords]
        if lacking or f["embedding"].dims != ("y", "x", "feature"):
            raise DataError(f"embedding store {name}: no {', '.join(lacking) or 'embedding (y, x, feature)'}; "
                            "expected a store written by geovit embed CKPT --raster ...")
        if not isinstance(item, xr.Dataset):
            f.attrs["source_path"] = str(item)
    return found


def _store_name(ds) -> str:
    return str(ds.attrs.get("source_path") or ds.attrs.get("checkpoint") or "<embedding store>")


def store_features(
    units: pd.DataFrame | str | os.PathLike,
    stores,
    scales: Iterable[int] | None = None,
    *,
    id_col: str = "unit_id",
    lon_col: str = "lon",
    lat_col: str = "lat",
    x_col: str | None = None,
    y_col: str | None = None,
    units_crs="EPSG:4326",
    raster_crs=None,
    on_outside: str = "error",
    on_nodata: str = "skip",
) -> "xarray.Dataset":  # noqa: F821
    """Units' embeddings read from ``geovit embed`` window-grid stores instead of encoding crops.

    Every store is one crop width (its ``window`` attribute, in scene pixels). A unit takes the
    embedding of the window whose centre is nearest to it (:func:`geovit.predict.embeddings.window_index`: with non-overlapping windows, the window that contains it, whose centre may
    be up to half a window away; embed with a smaller ``--stride`` to bring the centres closer).
    Unit coordinates are placed as in :func:`unit_positions` (lon/lat in ``units_crs``
    reprojected with pyproj, or ``x_col``/``y_col`` in the stores' CRS).

    Args:
        units: the units table (or its CSV).
        stores: a store path / Dataset or a list of them (see :func:`embedding_stores`).
        scales: crop widths to use (default: every store's window); each must be a store's window.
        id_col: unit id column.
        lon_col: longitude column.
        lat_col: latitude column.
        x_col: x column in the stores' CRS (with ``y_col``, instead of lon/lat).
        y_col: y column in the stores' CRS.
        units_crs: CRS of lon/lat.
        raster_crs: the CRS the caller expects the imagery in; an error when a store's differs.
        on_outside: ``"error"`` or ``"skip"`` for units outside a store's window grid.
        on_nodata: ``"skip"`` drops units whose window had no usable band (NaN embedding);
            ``"fill"`` is an error there (an embedding cannot be filled in).

    Returns:
        The Dataset of :func:`embed_units` (``embedding`` (unit, scale, feature), coordinates
        ``x``, ``y`` in the stores' CRS, ``col``, ``row`` continuous pixel coordinates of the
        scene, ``missing_fraction`` (1 for a window without any usable band, else 0)) plus
        ``channels_used`` (unit, scale) and ``window_offset_px`` (unit, scale): how far (scene
        pixels) the centre of each unit's window is from the unit.

    Raises:
        DataError: units outside a grid (``on_outside="error"``), stores in different CRSs with
            ``x_col``/``y_col``, a store without CRS for lon/lat units, a store CRS other than
            ``raster_crs``, units in nodata windows with ``on_nodata="fill"``.
        GeovitError: ``scales`` that are not the stores' windows, two stores of one window.
    """
    import xarray as xr
    from affine import Affine

    from geovit.predict.embeddings import store_crs, window_index

    if not isinstance(units, pd.DataFrame):
        from causal.units import read_units_csv

        units = read_units_csv(units)
    if len(units) == 0:
        raise DataError("units table: has no rows; expected one row per unit")
    if on_nodata not in ("skip", "fill"):
        raise GeovitError(f"on_nodata must be 'skip' or 'fill', got {on_nodata!r}")
    found = embedding_stores(stores)
    if found is None:
        raise DataError(f"{stores}: not an embedding store written by geovit embed --raster")
    windows = [int(ds.attrs["window"]) for ds in found]
    dup = sorted({w for w in windows if windows.count(w) > 1})
    if dup:
        raise GeovitError(f"embedding stores: several have window {dup} px; give one store per crop width")
    by_window = dict(zip(windows, found))
    wanted = sorted(by_window) if scales is None else sorted({int(s) for s in scales})
    unknown = [s for s in wanted if s not in by_window]
    if unknown:
        raise GeovitError(f"scales {unknown}: the embedding stores hold windows of {sorted(by_window)} px only "
                          "(a store's crop width is its window); embed the scene with a model of that input size")
    crss = {w: store_crs(by_window[w], f"embedding store {_store_name(by_window[w])}") for w in wanted}
    if raster_crs is not None:
        expected = _as_crs(raster_crs, "raster_crs")
        for w, crs in crss.items():
            if crs is None or _as_crs(crs.to_wkt(), "store crs") != expected:
                raise DataError(f"embedding store {_store_name(by_window[w])}: CRS "
                                f"{None if crs is None else crs.to_string()} differs from raster_crs {raster_crs}")
    if x_col or y_col:
        names = {w: (None if c is None else c.to_wkt()) for w, c in crss.items()}
        if len(set(names.values())) > 1:
            listing = ", ".join(f"{_store_name(by_window[w])} ({'none' if c is None else c.to_string()})"
                                for w, c in crss.items())
            raise DataError(f"embedding stores are in different CRSs ({listing}); x_col/y_col coordinates are in one "
                            "CRS: give the units as lon/lat instead")
    blocks, used, offsets, missing = [], [], [], []
    pos = None
    for w in wanted:
        ds, crs = by_window[w], crss[w]
        name = _store_name(ds)
        if crs is None and not (x_col or y_col):
            raise DataError(f"embedding store {name}: has no CRS, so lon/lat units cannot be placed on it; give "
                            "x_col/y_col in its pixel grid's coordinates")
        grid = RasterSource(f"embedding store {name} (window grid)", _as_crs(crs.to_wkt(), name) if crs else None,
                            Affine(*ds.attrs["transform"]), ds.sizes["y"], ds.sizes["x"], 0, ())
        p = unit_positions(units, grid, id_col=id_col, lon_col=lon_col, lat_col=lat_col, x_col=x_col, y_col=y_col,
                           units_crs=units_crs, on_outside=on_outside)
        pos = p if pos is None else pos[pos["unit_id"].isin(p["unit_id"])].reset_index(drop=True)
    if len(pos) == 0:
        raise DataError("no unit lies inside the window grid of the embedding stores")
    for w in wanted:
        ds = by_window[w]
        rows, cols, inside = window_index(ds, pos["x"].to_numpy(), pos["y"].to_numpy(),
                                          where=f"embedding store {_store_name(ds)}")
        assert inside.all()  # unit_positions kept only units inside every grid
        r, c = xr.DataArray(rows, dims="unit"), xr.DataArray(cols, dims="unit")
        emb = ds["embedding"].isel(y=r, x=c).values.astype(np.float32)
        blocks.append(emb)
        missing.append((~np.isfinite(emb).all(axis=1)).astype(np.float32))
        used.append(ds["channels_used"].isel(y=r, x=c).values.astype(np.int64) if "channels_used" in ds
                    else np.full(len(pos), -1, np.int64))
        scene_inv = ~Affine(*ds.attrs["scene_transform"])
        ucol, urow = scene_inv @ (pos["x"].to_numpy(), pos["y"].to_numpy())
        wcol, wrow = scene_inv @ (ds["x"].values[cols], ds["y"].values[rows])
        offsets.append(np.hypot(wcol - ucol, wrow - urow))
    missing = np.stack(missing, axis=1)
    ids = pos["unit_id"].to_numpy()
    if on_nodata == "fill" and missing.any():
        bad = ids[missing.max(axis=1) > 0].tolist()
        raise DataError(f"{len(bad)} unit(s) lie in windows without any usable band (NaN embeddings): "
                        f"{', '.join(map(str, bad[:10]))}{' …' if len(bad) > 10 else ''}; an embedding cannot be "
                        "filled in: use on_nodata='skip' (CLI --nodata skip)")
    affected = missing.max(axis=1) > 0
    if affected.any():
        bad = ids[affected].tolist()
        msg = (f"{len(bad)} of {len(ids)} unit(s) lie in windows without any usable band (NaN embeddings): "
               f"{', '.join(map(str, bad[:10]))}{f' … ({len(bad)} in all)' if len(bad) > 10 else ''}")
        if affected.all():
            raise DataError(msg + "; no unit is left")
        warnings.warn(msg + "; they are skipped", stacklevel=3)
    keep = ~affected
    first = by_window[wanted[0]]
    scene_inv = ~Affine(*first.attrs["scene_transform"])
    col, row = scene_inv @ (pos["x"].to_numpy(), pos["y"].to_numpy())
    pos = pos.assign(col=col, row=row)[keep].reset_index(drop=True)
    return xr.Dataset(
        {"embedding": (("unit", "scale", "feature"), np.stack(blocks, axis=1)[keep])},
        coords={"unit": pos["unit_id"].to_numpy(), "scale": np.array(wanted),
                "feature": np.arange(blocks[0].shape[1]),
                "x": ("unit", pos["x"].to_numpy()), "y": ("unit", pos["y"].to_numpy()),
                "col": ("unit", pos["col"].to_numpy()), "row": ("unit", pos["row"].to_numpy()),
                "missing_fraction": (("unit", "scale"), missing[keep]),
                "channels_used": (("unit", "scale"), np.stack(used, axis=1)[keep]),
                "window_offset_px": (("unit", "scale"), np.stack(offsets, axis=1)[keep])},
        attrs={"raster": ", ".join(_store_name(by_window[w]) for w in wanted),
               "crs": "" if crss[wanted[0]] is None else crss[wanted[0]].to_string(),
               "encoder": f"geovit embed: {first.attrs.get('model_family', '?')} {first.attrs.get('checkpoint', '')}",
               "input_size": int(first.attrs["window"]), "normalize": json.dumps({"checkpoint statistics": True}),
               "nodata_policy": on_nodata, "nodata_units": int((missing.max(axis=1) > 0).sum()),
               "lookup": "nearest window centre"},
    )


def embed_units(
    units: pd.DataFrame | str | os.PathLike,
    raster,
    encoder=None,
    scales: Iterable[int] | None = None,
    *,
    id_col: str = "unit_id",
    lon_col: str = "lon",
    lat_col: str = "lat",
    x_col: str | None = None,
    y_col: str | None = None,
    units_crs="EPSG:4326",
    variable: str | None = None,
    raster_crs=None,
    channels: str | Sequence[str] | None = None,
    normalize="zscore",
    batch_size: int = 64,
    cache: str | os.PathLike | None = None,
    on_outside: str = "error",
    on_nodata: str = "skip",
    jitter: Mapping | None = None,
    device: str | None = None,
    progress: bool = True,
) -> "xarray.Dataset":  # noqa: F821
    """Embed every unit at every crop width in ``scales`` (default 32, 64, 256) with a frozen encoder.

    ``raster`` may instead be a ``geovit embed --raster`` store (or a list of them): the units'
    features are then read from it (:func:`store_features`; ``scales`` default to the stores'
    windows, ``encoder`` / ``channels`` / ``jitter`` / ``variable`` must be left unset, and
    ``normalize`` / ``batch_size`` / ``cache`` / ``device`` / ``progress`` are not used).

    Returns an ``xarray.Dataset`` with ``embedding`` (unit, scale, feature) float32 and per-unit
    coordinates ``x``, ``y`` (raster CRS), ``col``, ``row``. ``jitter={"scale": 32, "draws": 5,
    "max_px": 3, "seed": 0}`` adds ``jittered`` (unit, draw, feature): the unit's crop at
    ``scale`` displaced by independent uniform integer offsets in [-max_px, max_px] per draw (the
    "sampled" variant). ``normalize``: ``"zscore"`` (per-band mean/std of the whole raster),
    ``"minmax"`` (per crop, as the paper's loader), ``"none"`` or ``(mean, std)``.
    ``cache=DIR`` stores each scale in ``DIR`` and reuses it on re-runs (see module docstring).

    Missing pixels -- raster nodata (or NaN) and pixels of a crop beyond the raster's edge: with
    ``on_nodata="skip"`` (default) every unit whose crops (at any scale or jittered draw) contain
    one is dropped, with a warning naming how many and which; ``"fill"`` keeps them, the
    normaliser filling the gaps (the band mean with ``zscore``), also with that warning. The
    coordinate ``missing_fraction`` (unit, scale) of the result gives each kept crop's share of
    missing pixels; ``attrs["nodata_units"]`` counts the units affected.
    """
    import xarray as xr
    from tqdm import tqdm

    stores = embedding_stores(raster)
    if stores is not None:
        given = [k for k, v in (("encoder", encoder), ("channels", channels), ("jitter", jitter),
                                ("variable", variable)) if v is not None]
        if given:
            raise GeovitError(f"{', '.join(given)}: do not apply to an embedding store (its features were encoded by "
                              f"the checkpoint {stores[0].attrs.get('checkpoint', '')!r} that geovit embed ran)")
        return store_features(units, stores, None if scales is None else scales, id_col=id_col, lon_col=lon_col,
                              lat_col=lat_col, x_col=x_col, y_col=y_col, units_crs=units_crs, raster_crs=raster_crs,
                              on_outside=on_outside, on_nodata=on_nodata)
    if scales is None:
        scales = (32, 64, 256)
    if not isinstance(units, pd.DataFrame):
        from causal.units import read_units_csv

        units = read_units_csv(units)
    if len(units) == 0:
        raise DataError("units table: has no rows; expected one row per unit")
    if on_nodata not in ("skip", "fill"):
        raise GeovitError(f"on_nodata must be 'skip' or 'fill', got {on_nodata!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise GeovitError(f"batch_size must be a positive integer, got {batch_size!r}")
    try:
        scales = sorted({int(s) for s in scales})
    except (TypeError, ValueError):
        raise GeovitError(f"scales must be positive crop widths in pixels, got {scales!r}") from None
    if not scales or scales[0] < 1:
        raise GeovitError(f"scales must be positive crop widths in pixels, got {scales}")
    source = open_raster(raster, variable=variable, crs=raster_crs)
    too_wide = [s for s in scales if s > max(source.height, source.width)]
    if too_wide:
        widest = max(source.height, source.width)
        raise GeovitError(f"scales {too_wide}: crops wider than raster {source.name} itself "
                          f"({source.height} × {source.width} px); expected widths up to {widest}")
    pos = unit_positions(units, source, id_col=id_col, lon_col=lon_col, lat_col=lat_col, x_col=x_col,
                         y_col=y_col, units_crs=units_crs, on_outside=on_outside)
    if len(pos) == 0:
        raise DataError(f"no unit lies inside raster {source.name}")
    enc = load_encoder(encoder, in_chans=source.count, channels=channels, device=device)
    norm, norm_desc = _normaliser(normalize, source)
    base_key = (source.fingerprint(), enc.fingerprint(), norm_desc,
                hashlib.sha1(pos[["unit_id"]].to_csv().encode() + pos[["col", "row"]].to_numpy().round(6).tobytes()).hexdigest())
    cache_dir = Path(cache) if cache is not None else None
    n = len(pos)
    zero = np.zeros((n, 2), np.int64)
    todo = [s for s in scales if cache_dir is None or not (cache_dir / f"scale{s}-{_key(base_key, s)}.zarr").exists()]
    draws = []
    if jitter is not None:
        js, nd, mp, seed = int(jitter["scale"]), int(jitter.get("draws", 5)), int(jitter.get("max_px", 3)), int(jitter.get("seed", 0))
        rng = np.random.default_rng(seed)
        draws = [rng.integers(-mp, mp + 1, size=(n, 2)) for _ in range(nd)]
        jkey = _key(base_key, "jitter", js, nd, mp, seed)
        jpath = None if cache_dir is None else cache_dir / f"jitter{js}-{jkey}.zarr"
        jtodo = nd if jpath is None or not jpath.exists() else 0
    else:
        jtodo = 0
    total = n * (len(todo) + jtodo)
    bar = tqdm(total=total, unit="crop", desc="embedding", disable=not progress or total == 0)
    def jittered():
        parts = [_encode_windows(source, pos, js, off, enc, norm, batch_size, bar) for off in draws]
        return np.stack([p[0] for p in parts], axis=1), np.stack([p[1] for p in parts], axis=1)

    try:
        blocks, missing = [], []
        for s in scales:
            path = None if cache_dir is None else cache_dir / f"scale{s}-{_key(base_key, s)}.zarr"
            emb, miss = _cached(path, lambda s=s: _encode_windows(source, pos, s, zero, enc, norm, batch_size, bar))
            blocks.append(emb)
            missing.append(miss)
        if jitter is not None:
            jit, jit_missing = _cached(jpath, jittered)
    finally:
        bar.close()
    missing = np.stack(missing, axis=1)
    columns, labels = missing, list(scales)
    if jitter is not None:
        columns = np.concatenate([missing, jit_missing], axis=1)
        labels += [f"{js} (jittered)"] * jit_missing.shape[1]
    keep = _nodata_policy(columns, pos["unit_id"].to_numpy(), labels, on_nodata)
    n_affected = int((~keep).sum()) if on_nodata == "skip" else int((columns.max(axis=1) > 0).sum())
    data = {"embedding": (("unit", "scale", "feature"), np.stack(blocks, axis=1)[keep])}
    if jitter is not None:
        data["jittered"] = (("unit", "draw", "feature"), jit[keep])
    pos = pos[keep].reset_index(drop=True)
    ds = xr.Dataset(
        data,
        coords={"unit": pos["unit_id"].to_numpy(), "scale": np.array(scales), "feature": np.arange(blocks[0].shape[1]),
                "x": ("unit", pos["x"].to_numpy()), "y": ("unit", pos["y"].to_numpy()),
                "col": ("unit", pos["col"].to_numpy()), "row": ("unit", pos["row"].to_numpy()),
                "missing_fraction": (("unit", "scale"), missing[keep])},
        attrs={"raster": source.name, "crs": source.crs.to_string(), "encoder": enc.name,
               "input_size": enc.input_size, "normalize": json.dumps(norm_desc),
               "nodata_policy": on_nodata, "nodata_units": n_affected},
    )
    if jitter is not None:
        ds["jittered"].attrs.update({"scale": js, "max_px": mp, "seed": seed})
    return ds


# --------------------------------------------------------------------------------------------
# Combinations
# --------------------------------------------------------------------------------------------
def scale_label(scales: Iterable[int]) -> str:
    """``(32, 256)`` → ``"32+256"``."""
    return "+".join(str(int(s)) for s in scales)


def _pca(blocks: list[np.ndarray], n_components: int | None, mode: str, random_state: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    if mode not in ("joint", "per_scale"):
        raise GeovitError(f"pca_mode must be 'joint' or 'per_scale', got {mode!r}")
    if not n_components:
        return np.concatenate(blocks, axis=1)

    def fit(a):
        k = min(n_components, a.shape[0], a.shape[1])
        return PCA(k, random_state=random_state).fit_transform(a)

    if mode == "per_scale":
        return np.concatenate([fit(b) for b in blocks], axis=1)
    return fit(np.concatenate(blocks, axis=1))


def combine(ds, scales: Iterable[int] | None = None, *, pca: int | None = None, pca_mode: str = "joint",
            random_state: int = 0) -> np.ndarray:
    """Covariates for the CATE estimator: the concatenation [z_s for s in scales], optionally PCA'd.

    ``pca=n`` keeps n components, fitted once on the concatenation (``pca_mode="joint"``) or
    on each scale before concatenating (``"per_scale"``, n per scale).
    """
    scales = list(ds["scale"].values) if scales is None else [int(s) for s in scales]
    missing = [s for s in scales if s not in set(ds["scale"].values.tolist())]
    if missing:
        raise GeovitError(f"scales {missing} were not embedded; available: {ds['scale'].values.tolist()}")
    blocks = [ds["embedding"].sel(scale=s).values for s in scales]
    return _pca(blocks, pca, pca_mode, random_state)


def sampled_features(ds, large_scale: int | None = None, *, draws: int | None = None, pca: int | None = None,
                     pca_mode: str = "joint", random_state: int = 0) -> np.ndarray:
    """The "sampled" variant: ``draws`` jittered small-crop embeddings stacked with the large crop."""
    if "jittered" not in ds:
        raise GeovitError("the dataset has no jittered crops; embed with jitter={'scale': …, 'draws': …}")
    large = int(ds["scale"].values.max()) if large_scale is None else int(large_scale)
    jit = ds["jittered"].values
    draws = jit.shape[1] if draws is None else int(draws)
    blocks = [jit[:, d] for d in range(draws)] + [ds["embedding"].sel(scale=large).values]
    return _pca(blocks, pca, pca_mode, random_state)


def scale_arrays(ds) -> dict[int, np.ndarray]:
    """``{scale: (n_units, d) array}``, one block per embedded crop width."""
    return {int(s): ds["embedding"].sel(scale=s).values for s in ds["scale"].values}


def feature_sets(ds, *, sizes: Iterable[int] = (1, 2), pca: int | None = None, pca_mode: str = "joint",
                 sampled: bool = False, random_state: int = 0) -> dict[str, np.ndarray]:
    """Every subset of the embedded scales with a size in ``sizes``: ``{"32": X, "32+256": X, …}``.

    With ``sampled=True`` (and jittered crops in ``ds``) adds ``"sampled"``.
    """
    all_scales = [int(s) for s in ds["scale"].values]
    out = {}
    for k in sizes:
        for subset in itertools.combinations(all_scales, k):
            out[scale_label(subset)] = combine(ds, subset, pca=pca, pca_mode=pca_mode, random_state=random_state)
    if sampled:
        out["sampled"] = sampled_features(ds, pca=pca, pca_mode=pca_mode, random_state=random_state)
    return out
