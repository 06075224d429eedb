"""Typed configs (geovit.config) and the flags generated from them (geovit.cli.options)."""
from __future__ import annotations

import argparse

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from geovit.cli.options import add_config_flags, resolve_config
from geovit.config import ChangeConfig, ClassifyConfig, ConfigError, DemoConfig, PretrainConfig, TrainerConfig
from geovit.errors import GeovitError
from pdes.config import VICONConfig

CONFIGS = [ClassifyConfig, DemoConfig, PretrainConfig, ChangeConfig, VICONConfig]


def _parse(config_cls, *argv):
    parser = argparse.ArgumentParser()
    add_config_flags(parser, config_cls)
    return parser.parse_args([str(a) for a in argv])


@pytest.mark.parametrize("config_cls", CONFIGS)
def test_defaults_print_and_read_back_identically(config_cls):
    text = config_cls().to_yaml()
    again = config_cls.from_yaml(text)
    assert again == config_cls() and again.to_yaml() == text
    assert set(yaml.safe_load(text)) == set(config_cls.fields())


@pytest.mark.parametrize("config_cls", CONFIGS)
def test_every_field_has_a_flag_with_help(config_cls):
    parser = argparse.ArgumentParser()
    add_config_flags(parser, config_cls)
    flags = {opt for a in parser._actions for opt in a.option_strings}
    for name, f in config_cls.fields().items():
        assert "--" + name.replace("_", "-") in flags
        assert f.metadata["help"], name


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 4096), steps=st.none() | st.integers(1, 10**6), seed=st.integers(0, 2**31),
       lr=st.floats(1e-8, 1.0), precision=st.sampled_from(["32-true", "bf16-mixed", "16-mixed"]))
def test_flags_round_trip_through_printed_yaml(tmp_path_factory, batch, steps, seed, lr, precision):
    argv = ["--batch-size", batch, "--seed", seed, "--lr", repr(lr), "--precision", precision]
    if steps is not None:
        argv += ["--max-steps", steps]
    cfg = resolve_config(_parse(ClassifyConfig, *argv), ClassifyConfig)
    assert (cfg.batch_size, cfg.seed, cfg.lr, cfg.precision, cfg.max_steps) == (batch, seed, lr, precision, steps)
    path = tmp_path_factory.mktemp("cfg") / "run.yaml"
    path.write_text(cfg.to_yaml())
    replayed = resolve_config(_parse(ClassifyConfig, "--config", path), ClassifyConfig)
    assert replayed == cfg and replayed.to_yaml() == cfg.to_yaml()


def test_flags_override_yaml_which_overrides_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("batch_size: 7\nlr: 5e-3\nmodel_kwargs: {depth: 2}\n")
    cfg = resolve_config(_parse(ClassifyConfig, "--config", path, "--batch-size", "9"), ClassifyConfig)
    assert cfg.batch_size == 9 and cfg.lr == 5e-3 and cfg.model_kwargs == {"depth": 2}
    assert cfg.weight_decay == ClassifyConfig().weight_decay


@pytest.mark.parametrize("argv, needle", [
    (["--batch-size", "0"], "--batch-size 0: expected an integer ≥ 1"),
    (["--batch-size", "-3"], "--batch-size -3: expected an integer ≥ 1"),
    (["--max-steps", "-1"], "--max-steps -1: expected an integer ≥ 1"),
    (["--max-epochs", "0"], "--max-epochs 0"),
    (["--batch-size", "two"], "--batch-size two: expected an integer"),
    (["--precision", "fp8"], "--precision fp8: expected one of 64-true, 32-true"),
    (["--accelerator", "tpu"], "--accelerator tpu: expected one of auto, cpu"),
    (["--devices", "two"], "--devices two: expected a count"),
    (["--num-workers", "-1"], "--num-workers -1"),
    (["--model-kwargs", "[1, 2]"], "--model-kwargs [1, 2]: expected a JSON object"),
])
def test_bad_flags_name_the_flag_value_and_what_is_allowed(argv, needle):
    with pytest.raises(GeovitError) as err:
        resolve_config(_parse(ClassifyConfig, *argv), ClassifyConfig)
    assert needle in str(err.value)


def test_gpu_asked_for_where_none_exists(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GeovitError, match=r"--accelerator gpu: expected cpu or auto: no CUDA GPU"):
        resolve_config(_parse(PretrainConfig, "--accelerator", "gpu"), PretrainConfig)


@pytest.mark.parametrize("text, needle", [
    ("batch_size: 0\n", "batch_size = 0: expected an integer ≥ 1"),
    ("batch_size: '8'\n", "batch_size = '8': expected an integer"),
    ("lr: fast\n", "lr = 'fast': expected a number"),
    ("augment: 1\n", "augment = 1: expected true or false"),
    ("learning_rate: 0.1\n", "unknown key 'learning_rate'; expected one of the known keys: out, max_steps"),
    ("mask_ratio: 1.5\n", "mask_ratio = 1.5: expected a number > 0 and < 1"),
    ("image_size: 64\n", "image_size = 64: expected 32 or null"),
    ("- 1\n- 2\n", "expected a mapping of settings at top level, got list"),
    ("a: [1\n", "not valid YAML"),
])
def test_bad_yaml_names_the_file_key_and_value(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(GeovitError) as err:
        resolve_config(_parse(PretrainConfig, "--config", path), PretrainConfig)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(GeovitError, match="--config .*nope.yaml: file not found"):
        resolve_config(_parse(ChangeConfig, "--config", tmp_path / "nope.yaml"), ChangeConfig)


def test_change_max_epochs_alone_means_epochs():
    assert resolve_config(_parse(ChangeConfig), ChangeConfig).max_steps == 80_000
    cfg = resolve_config(_parse(ChangeConfig, "--max-epochs", "3"), ChangeConfig)
    assert cfg.max_epochs == 3 and cfg.max_steps is None
    both = resolve_config(_parse(ChangeConfig, "--max-epochs", "3", "--max-steps", "5"), ChangeConfig)
    assert (both.max_epochs, both.max_steps) == (3, 5)


def test_change_tile_must_fit_the_patch_grid():
    with pytest.raises(ConfigError, match="tile = 100: expected a multiple of 16"):
        ChangeConfig.from_dict({"tile": 100})
    assert ChangeConfig.from_dict({"tile": 0}).tile == 0


def test_vicon_pairs_rule_and_model_config():
    with pytest.raises(ConfigError, match=r"min_ex \(5\) < num_pairs <= max_pairs \(10\)"):
        VICONConfig.from_dict({"num_pairs": 12})
    cfg = VICONConfig.from_dict({"num_patches": 4})
    assert cfg.model_config(32)["patch_size"] == 8
    with pytest.raises(ConfigError, match="num_patches = 4: expected a divisor of the frame size 30"):
        cfg.model_config(30)


def test_list_and_bool_flags():
    cfg = resolve_config(_parse(VICONConfig, "--data", "a", "b", "--channels", "density", "vx"), VICONConfig)
    assert cfg.data == ["a", "b"] and cfg.channels == ["density", "vx"]
    assert resolve_config(_parse(PretrainConfig, "--no-augment"), PretrainConfig).augment is False


@pytest.mark.parametrize("devices, expected", [("auto", "auto"), ("2", 2), ("0,1", [0, 1]), ("-1", -1)])
def test_devices_as_lightning_takes_them(devices, expected, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # -1 (every GPU) needs one
    assert TrainerConfig.from_dict({"devices": devices}).trainer_devices == expected


@pytest.mark.parametrize("devices", ["0", "00", "-1", "-2", "x"])
def test_devices_that_lightning_would_reject_are_refused_by_name(devices, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="devices"):
        TrainerConfig.from_dict({"devices": devices, "accelerator": "cpu"})


def test_so2sat_versions_match_the_loader():
    from geovit.config import SO2SAT_VERSIONS
    from geovit.data.so2sat import FILENAMES

    assert SO2SAT_VERSIONS == tuple(FILENAMES)
