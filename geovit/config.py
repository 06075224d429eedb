"""Typed, printable run configurations.

Every training command has one dataclass here (:class:`ClassifyConfig`, :class:`PretrainConfig`,
:class:`ChangeConfig`; ``pdes`` adds ``VICONConfig``), all built on :class:`TrainerConfig`, the
settings every Lightning run shares. A field states its type, default, help text and allowed
values (``choices``, ``minimum``, ``maximum``); :meth:`Config.from_dict` checks a mapping against
them before anything is read or written, and :meth:`Config.to_yaml` prints the fully resolved
configuration, which :meth:`Config.from_yaml` reads back to the same object (printing it again
gives identical text)::

    cfg = ClassifyConfig.from_dict({"batch_size": 32, "max_steps": 100})
    text = cfg.to_yaml()
    assert ClassifyConfig.from_yaml(text).to_yaml() == text

Errors are :class:`ConfigError` (a :class:`~geovit.errors.GeovitError`) naming the key, the value
and what is allowed; the CLI turns the key into the flag or the YAML file it came from.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import yaml

from geovit.errors import GeovitError

#: Lightning precision values accepted by ``precision``.
PRECISIONS = ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true",
              "transformer-engine", "transformer-engine-float16")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
#: So2Sat versions (``geovit.data.so2sat.FILENAMES``; spelled out to keep this module light)
SO2SAT_VERSIONS = ("2", "3_random", "3_block", "3_culture_10")
#: help of the So2Sat loader settings shared by ``train`` and ``pretrain``
VAL_CITIES_HELP = ("comma list of So2Sat cities of the training file held out as the validation split "
                   "(needs training_geo.h5 beside it; none: the version's validation split)")
SO2SAT_READS_HELP = ("So2Sat training reads: block (batches of runs of consecutive rows, one HDF5 slice each) "
                     "or sample (per-sample shuffle)")


class ConfigError(GeovitError):
    """A configuration value has the wrong type or is out of range.

    Attributes:
        key: the field name (``batch_size``).
        value: the offending value.
        expected: what is allowed, in words.
    """

    def __init__(self, key: str, value: Any, expected: str, message: str | None = None):
        self.key, self.value, self.expected = key, value, expected
        super().__init__(message or f"{key} = {value!r}: expected {expected}")


def option(default: Any = None, help: str = "", *, choices: Sequence[Any] | None = None,
           minimum: float | None = None, maximum: float | None = None, exclusive: bool = False) -> Any:
    """A config field with its help text and allowed values.

    Args:
        default: the default (mutable defaults are copied per instance).
        help: one line for ``--help`` and the docs.
        choices: the allowed values.
        minimum: smallest allowed number (``exclusive``: the bound itself is not allowed).
        maximum: largest allowed number (``exclusive`` as for ``minimum``).
        exclusive: whether the bounds are open.
    """
    meta = {"help": help, "choices": tuple(choices) if choices else None, "minimum": minimum,
            "maximum": maximum, "exclusive": exclusive}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: json.loads(json.dumps(default)), metadata=meta)
    return field(default=default, metadata=meta)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _type_name(tp: Any) -> str:
    base = typing.get_origin(tp) or tp
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            dict: "a mapping (JSON/YAML object)", list: "a list"}.get(base, str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (``Optional`` allowed), or :class:`ConfigError`."""
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(key, value, _type_name(tp))
    base = typing.get_origin(tp) or tp
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(key, value, "a finite number")
            return number
    elif base is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. version: 2 in YAML
    elif base is dict:
        if isinstance(value, Mapping):
            return json.loads(json.dumps(dict(value)))
    elif base is list:
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(tp) or (Any,)
            return [value_ if item is Any else _coerce(f"{key}[{i}]", value_, item) for i, value_ in enumerate(value)]
    else:  # pragma: no cover - a field type this module does not know
        raise TypeError(f"config field {key}: unsupported type {tp}")
    raise ConfigError(key, value, _type_name(tp) + (" or null" if optional else ""))


def out_of_bounds(value: float, low: float | None = None, high: float | None = None, *,
                  open_low: bool = False, open_high: bool = False) -> str | None:
    """The allowed range in words (``"> 0 and ≤ 1"``) when ``value`` lies outside it, else None.

    >>> out_of_bounds(2, 0, 1, open_low=True), out_of_bounds(0.5, 0, 1)
    ('> 0 and ≤ 1', None)
    """
    bad_low = low is not None and (value <= low if open_low else value < low)
    bad_high = high is not None and (value >= high if open_high else value > high)
    if not (bad_low or bad_high):
        return None
    parts = []
    if low is not None:
        parts.append(f"{'>' if open_low else '≥'} {low:g}")
    if high is not None:
        parts.append(f"{'<' if open_high else '≤'} {high:g}")
    return " and ".join(parts)


def _check_range(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(key, value, "one of " + ", ".join(map(str, choices)))
    lo, hi, open_ = meta.get("minimum"), meta.get("maximum"), meta.get("exclusive")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        bounds = out_of_bounds(value, lo, hi, open_low=bool(open_), open_high=bool(open_))
        if bounds:
            raise ConfigError(key, value, f"{_type_name(type(value))} {bounds}")


@dataclass
class Config:
    """Base of every run configuration: typed fields, checks, YAML printing and reading."""

    #: the command this configuration runs (printed as a comment in the YAML).
    command: typing.ClassVar[str] = ""

    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field]:
        """``name -> dataclasses.Field`` in declaration order."""
        return {f.name: f for f in dataclasses.fields(cls)}

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        """``name -> resolved type annotation``."""
        hints = typing.get_type_hints(cls)
        return {name: hints[name] for name in cls.fields()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None = None, **overrides: Any):
        """A checked configuration from ``data`` (+ ``overrides``); missing keys take defaults.

        Raises:
            ConfigError: an unknown key, a value of the wrong type, or one out of range.
        """
        merged = {**dict(data or {}), **overrides}
        known = cls.fields()
        unknown = sorted(set(merged) - set(known))
        if unknown:
            expected = "one of the known keys: " + ", ".join(known)
            raise ConfigError(unknown[0], merged[unknown[0]], expected,
                              f"unknown key {unknown[0]!r}; expected {expected}")
        types_ = cls.field_types()
        values = {k: _coerce(k, v, types_[k]) for k, v in merged.items()}
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check every field's type and range, then :meth:`check` (cross-field rules).

        Raises:
            ConfigError: naming the first offending key.
        """
        types_ = self.field_types()
        for name, f in self.fields().items():
            value = _coerce(name, getattr(self, name), types_[name])
            object.__setattr__(self, name, value)
            _check_range(name, value, f.metadata)
        self.check()

    def check(self) -> None:
        """Check the command's cross-field rules (overridden per command).

        Raises:
            ConfigError: naming the field, its value and what is allowed.
        """

    @classmethod
    def adjust(cls, data: dict[str, Any], given: set[str]) -> dict[str, Any]:
        """Rewrite raw settings before checking; ``given`` holds the keys the user set (override)."""
        return data

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` of every field (JSON/YAML-serialisable)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_yaml(self) -> str:
        """The fully resolved configuration as YAML text (fields in declaration order)."""
        header = f"# geovit {self.command} configuration: replay with `--config FILE`\n" if self.command else ""
        return header + yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False, allow_unicode=True)

    @classmethod
    def from_yaml(cls, text: str, where: str = "<yaml>"):
        """Parse YAML ``text`` (a mapping at top level) into a checked configuration.

        Raises:
            GeovitError: not valid YAML or not a mapping (naming ``where``).
            ConfigError: a bad key or value.
        """
        return cls.from_dict(parse_yaml_mapping(text, where))

    def replace(self, **changes: Any):
        """A checked copy with ``changes`` applied."""
        return type(self).from_dict({**self.to_dict(), **changes})


def parse_yaml_mapping(text: str, where: str) -> dict[str, Any]:
    """The top-level mapping of YAML ``text``; empty text gives ``{}``.

    Raises:
        GeovitError: the text is not YAML or not a mapping; the message names ``where``.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise GeovitError(f"{where}: not valid YAML ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GeovitError(f"{where}: expected a mapping of settings at top level, got {type(data).__name__}")
    return data


def compile_unavailable(accelerator: str = "auto") -> str | None:
    """Why ``torch.compile`` cannot run here (in words), or None when it can.

    ``torch.compile`` needs torch ≥ 2 and, for CPU code (``accelerator`` cpu, or auto without a
    GPU), a C++ compiler: the one ``$CXX`` names, else ``g++``, ``c++`` or ``clang++`` on the PATH.
    """
    import os
    import shutil

    import torch

    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile (torch >= 2 is needed)"
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu:
        names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
        if not any(shutil.which(n) for n in names):
            return ("torch.compile on the CPU needs a C++ compiler and none was found "
                    f"({' / '.join(names)}); install one (e.g. apt-get install g++) or set CXX")
    return None


_DEVICES = re.compile(r"^(auto|-1|\d+|\d+(,\d+)*,?)$")


def check_model_name(key: str, name: str, family: str) -> None:
    """``name`` must be a registered model of ``family`` (checked before any data is written).

    Raises:
        ConfigError: naming ``key``, the value and the family's models.
    """
    from geovit.models import list_models

    names = [m for m in list_models() if m.startswith(family)]
    if name not in names:
        raise ConfigError(key, name, f"a registered {family} model: " + ", ".join(names))


@dataclass
class TrainerConfig(Config):
    """Settings every training command shares (the Lightning Trainer and the run folder)."""

    out: str = option("runs", "output folder: checkpoints (*.ckpt), logs, plots, config.yaml")
    max_steps: typing.Optional[int] = option(None, "stop after this many optimizer steps", minimum=1)
    max_epochs: typing.Optional[int] = option(None, "stop after this many epochs", minimum=1)
    batch_size: int = option(64, "samples per device and step", minimum=1)
    devices: str = option("auto", "number of devices, 'auto', or a comma list of device indices")
    accelerator: str = option("auto", "cpu, gpu/cuda, mps or auto (cuda when present)", choices=ACCELERATORS)
    strategy: str = option("auto", "Lightning strategy: auto, ddp, ddp_spawn, ...")
    num_nodes: int = option(1, "number of machines", minimum=1)
    seed: int = option(0, "seed of every random draw (data order, augmentation, masks, init)", minimum=0)
    resume: typing.Optional[str] = option(None, "checkpoint to resume from, or 'last' (OUT/checkpoints/last.ckpt)")
    num_workers: int = option(0, "DataLoader worker processes", minimum=0)
    precision: str = option("32-true", "Lightning precision", choices=PRECISIONS)
    ckpt_every: typing.Optional[int] = option(None, "also checkpoint every N optimizer steps", minimum=1)
    compile: bool = option(False, "torch.compile the model (in place: checkpoint keys unchanged); the first "
                           "steps are slower while it compiles; needs a C++ compiler on the CPU")

    def check(self) -> None:
        """Check the trainer settings (out folder, devices, accelerator) before anything runs.

        Raises:
            ConfigError: naming the field, its value and what is allowed.
        """
        out = Path(self.out).expanduser()
        if out.exists() and not out.is_dir():
            raise ConfigError("out", self.out, "a folder (this path is an existing file)")
        devices = str(self.devices)
        if not _DEVICES.match(devices) or re.fullmatch(r"0+", devices):
            raise ConfigError("devices", self.devices, "a count ≥ 1 (e.g. 2), 'auto', -1 (every GPU), "
                                                       "or a comma list of indices (e.g. 0,1)")
        if self.accelerator in ("gpu", "cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError("accelerator", self.accelerator,
                                  "cpu or auto: no CUDA GPU is available on this machine")
        if self.accelerator == "mps":
            import torch

            if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
                raise ConfigError("accelerator", self.accelerator, "cpu or auto: no MPS device on this machine")
        if self.compile:
            problem = compile_unavailable(self.accelerator)
            if problem:
                raise ConfigError("compile", self.compile, f"false: {problem}")
        if devices == "-1" and self.accelerator in ("auto", "cpu"):
            import torch

            if self.accelerator == "cpu" or not torch.cuda.is_available():
                raise ConfigError("devices", self.devices, "a count ≥ 1 on the CPU (-1 means every GPU, and there is none)")

    @property
    def trainer_devices(self) -> int | str | list[int]:
        """``devices`` as Lightning takes it: an int count, ``"auto"``, or a list of indices."""
        text = str(self.devices)
        if text in ("auto", "-1"):
            return text if text == "auto" else -1
        if "," in text:
            return [int(v) for v in text.split(",") if v]
        return int(text)


@dataclass
class ClassifyConfig(TrainerConfig):
    """``geovit train``: supervised ChannelViT (+HCS) classification on So2Sat."""

    command: typing.ClassVar[str] = "train"
    out: str = option("runs/train", "output folder: checkpoints (*.ckpt), logs, plots, config.yaml")
    model: str = option("channelvit_small_patch8", "registered ChannelViT variant")
    model_kwargs: dict = option({}, "constructor overrides (JSON object), e.g. {\"depth\": 4}")
    channels: str = option("so2sat", "channel preset (so2sat, sentinel1, sentinel2, ...) or comma list of band names")
    data: typing.Optional[str] = option(None, "So2Sat root folder (none: a synthetic set, said on every line)")
    version: str = option("2", "So2Sat version", choices=SO2SAT_VERSIONS)
    lr: float = option(5e-4, "peak learning rate (AdamW)", minimum=0, exclusive=True)
    weight_decay: float = option(0.04, "AdamW weight decay (weights only)", minimum=0)
    warmup_steps: int = option(100, "linear warm-up steps", minimum=0)
    synthetic_samples: int = option(2048, "training samples of the synthetic set written without data", minimum=17)
    val_cities: typing.Optional[str] = option(None, VAL_CITIES_HELP)
    so2sat_reads: str = option("block", SO2SAT_READS_HELP, choices=("block", "sample"))

    def check(self) -> None:
        super().check()
        check_model_name("model", self.model, "channelvit")


@dataclass
class DemoConfig(ClassifyConfig):
    """``geovit demo``: ChannelViT-T/16 with and without HCS on synthetic So2Sat (a few minutes on 2 cores)."""

    command: typing.ClassVar[str] = "demo"
    out: str = option("runs/demo", "output folder")
    model: str = option("channelvit_tiny_patch16", "registered ChannelViT variant")
    model_kwargs: dict = option({"embed_dim": 96, "depth": 4, "num_heads": 3, "img_size": 32},
                                "constructor overrides (JSON object)")
    lr: float = option(4e-3, "peak learning rate (AdamW)", minimum=0, exclusive=True)
    weight_decay: float = option(0.05, "AdamW weight decay (weights only)", minimum=0)
    warmup_steps: int = option(30, "linear warm-up steps", minimum=0)
    max_steps: typing.Optional[int] = option(480, "stop after this many optimizer steps", minimum=1)
    synthetic_samples: int = option(1536, "training samples of the synthetic set", minimum=17)

    def check(self) -> None:
        """The trainer checks, and no ``data`` (the demo makes its own).

        Raises:
            ConfigError: naming the field, its value and what is allowed.
        """
        super().check()
        if self.data is not None:
            raise ConfigError("data", self.data, "null: the demo runs on its own synthetic data (use `geovit train`)")


@dataclass
class PretrainConfig(TrainerConfig):
    """``geovit pretrain``: ChA-MAEViT channel-aware MAE pretraining (So2Sat, JUMP-CP, CHAMMI)."""

    command: typing.ClassVar[str] = "pretrain"
    out: str = option("runs/pretrain", "output folder: checkpoints, logs, plots, run_summary.json, config.yaml")
    batch_size: int = option(128, "samples per device and step", minimum=1)
    dataset: str = option("so2sat", "data set format", choices=("so2sat", "jumpcp", "chammi"))
    data: typing.Optional[str] = option(None, "dataset folder (none: a synthetic set, said on every line)")
    channels: typing.Optional[str] = option(None, "channel preset or comma list (default: the dataset's whole table)")
    model: str = option("chamaevit_small_patch8", "registered ChA-MAEViT variant")
    model_kwargs: dict = option({}, "constructor overrides, e.g. {\"depth\": 4, \"decoder\": {\"dcp_mask_ratio\": 0.5}}")
    so2sat_version: str = option("2", "So2Sat version", choices=SO2SAT_VERSIONS)
    val_cities: typing.Optional[str] = option(None, VAL_CITIES_HELP)
    so2sat_reads: str = option("block", SO2SAT_READS_HELP, choices=("block", "sample"))
    image_size: typing.Optional[int] = option(None, "resize microscopy cells to this size (So2Sat: 32; default 224)",
                                              minimum=1)
    lr: float = option(4e-4, "peak learning rate (AdamW)", minimum=0, exclusive=True)
    weight_decay: float = option(5e-5, "AdamW weight decay (weights only)", minimum=0)
    warmup_steps: int = option(500, "linear warm-up steps (at most a tenth of the run)", minimum=0)
    grad_clip: float = option(1.0, "gradient-norm clipping", minimum=0)
    mask_ratio: typing.Optional[float] = option(None, "DCP mask ratio (default: the model recipe's)",
                                                minimum=0, maximum=1, exclusive=True)
    decoder_type: typing.Optional[str] = option(
        None, "chamaevit_decoder: one channel-aware decoder for all channels (§3.3); camae_decoder: one decoder "
        "per channel, CA-MAE style (the paper's Table 4 ablation) (default: the model's)",
        choices=("chamaevit_decoder", "camae_decoder"))
    use_self_image_norm: typing.Optional[bool] = option(
        None, "standardise every channel of every image over its pixels before the encoder, so the "
        "reconstruction targets are self-normalised (reference option; default: the model's, off)")
    channel_sampling: typing.Optional[str] = option(
        None, "hcs: Hierarchical Channel Sampling of the input channels every step, before DCP; none: off "
        "(default: the model's, off)", choices=("none", "hcs"))
    channel_sampling_min: typing.Optional[int] = option(None, "fewest channels a channel-sampling draw keeps "
                                                        "(default 1)", minimum=1)
    channel_sampling_max: typing.Optional[int] = option(None, "most channels a channel-sampling draw keeps "
                                                        "(default: all)", minimum=1)
    augment: bool = option(True, "seeded flips / 90° rotations")
    synthetic_samples: typing.Optional[int] = option(None, "size of the synthetic set written without data", minimum=1)
    plot_samples: int = option(2, "samples in the per-epoch reconstruction plot", minimum=0)
    recipe: str = option("auto", "defaults: paper (ChA-MAEViT-S/8, batch 128, the whole set); cpu (sized for a "
                         "machine without a GPU, see CPU_RECIPE); auto: cpu when no CUDA GPU is used, else paper",
                         choices=("auto", "paper", "cpu"))

    #: the defaults ``recipe`` ``cpu`` puts in place of the paper's (settings given explicitly win):
    #: a short run of ChA-MAEViT-Ti/8 that a machine without a GPU finishes in minutes (a sixteenth
    #: of the paper recipe's compute per step), with 66 MB checkpoints instead of 261 MB.
    CPU_RECIPE: typing.ClassVar[dict[str, Any]] = {
        "model": "chamaevit_tiny_patch8", "batch_size": 16, "max_steps": 200, "warmup_steps": 20,
        "synthetic_samples": 2048,
    }

    @classmethod
    def cpu_recipe_applies(cls, data: Mapping[str, Any]) -> bool:
        """Whether the ``cpu`` recipe's defaults are used for these settings (``auto``: no GPU in use)."""
        recipe = data.get("recipe", "auto")
        if recipe != "auto":
            return recipe == "cpu"
        if data.get("accelerator", "auto") == "cpu":
            return True
        import torch

        return data.get("accelerator", "auto") == "auto" and not torch.cuda.is_available()

    @classmethod
    def adjust(cls, data: dict[str, Any], given: set[str]) -> dict[str, Any]:
        if cls.cpu_recipe_applies(data):
            data = {**{k: v for k, v in cls.CPU_RECIPE.items() if k not in given}, **data}
            if "max_epochs" in given and "max_steps" not in given:
                data.pop("max_steps", None)  # epochs given alone mean epochs
        return data

    def check(self) -> None:
        super().check()
        check_model_name("model", self.model, "chamaevit")
        if self.dataset == "so2sat" and self.image_size not in (None, 32):
            raise ConfigError("image_size", self.image_size, "32 or null: So2Sat patches are 32×32")
        if self.dataset != "so2sat" and self.val_cities is not None:
            raise ConfigError("val_cities", self.val_cities, f"null: cities are So2Sat's (dataset is {self.dataset})")
        low, high = self.channel_sampling_min, self.channel_sampling_max
        if low is not None and high is not None and high < low:
            raise ConfigError("channel_sampling_max", high, f"null or an integer ≥ channel_sampling_min = {low}")
        if self.channel_sampling in (None, "none") and (low is not None or high is not None):
            key = "channel_sampling_min" if low is not None else "channel_sampling_max"
            raise ConfigError(key, getattr(self, key), "null unless channel_sampling is hcs (it bounds HCS draws); "
                              "add --channel-sampling hcs")


@dataclass
class ChangeConfig(TrainerConfig):
    """``geovit change train``: ChangeViT change detection on a LEVIR-CD-layout folder."""

    command: typing.ClassVar[str] = "change train"
    out: str = option("runs/change", "output folder: checkpoints, logs, plots, config.yaml")
    batch_size: int = option(16, "tiles per device and step", minimum=1)
    max_steps: typing.Optional[int] = option(80_000, "stop after this many optimizer steps (the reference counts steps)",
                                             minimum=1)
    data: typing.Optional[str] = option(None, "dataset folder (LEVIR-CD, WHU-CD, CLCD or torchgeo's layout)")
    model: str = option("changevit_tiny", "registered ChangeViT variant")
    model_kwargs: dict = option({}, "constructor overrides (JSON object), e.g. {\"depth\": 4}")
    tile: int = option(256, "training/validation tile side, a multiple of 16 (0 = whole scenes)", minimum=0)
    lr: float = option(2e-4, "Adam learning rate", minimum=0, exclusive=True)
    weight_decay: float = option(1e-4, "Adam L2 weight decay", minimum=0)
    warmup_steps: int = option(200, "linear warm-up steps", minimum=0)
    normalization: str = option("imagenet", "input statistics", choices=("imagenet", "half"))
    labels: str = option("auto", "strict: labels 0/255; nonzero: any > 0 is change; auto: nonzero for torchgeo's layout",
                         choices=("auto", "strict", "nonzero"))
    plot_samples: int = option(4, "val tiles in the per-epoch plot", minimum=0)

    @classmethod
    def adjust(cls, data: dict[str, Any], given: set[str]) -> dict[str, Any]:
        # the reference recipe counts steps (80k); max_epochs given alone means epochs
        if "max_epochs" in given and "max_steps" not in given:
            data = {**data, "max_steps": None}
        return data

    def check(self) -> None:
        super().check()
        check_model_name("model", self.model, "changevit")
        if self.tile % 16:
            raise ConfigError("tile", self.tile, "a multiple of 16 (the ViT patch), or 0 for whole scenes")


def config_types() -> dict[str, type[Config]]:
    """``command -> config class`` of geovit's own training commands."""
    return {c.command: c for c in (ClassifyConfig, DemoConfig, PretrainConfig, ChangeConfig)}
