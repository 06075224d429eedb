"""``--print-config`` / ``--config`` round trips and early value checks for every training command."""
from __future__ import annotations

import pytest
import yaml

COMMANDS = {
    "train": ["train"],
    "pretrain": ["pretrain"],
    "change train": ["change", "train"],
    "pdes train": ["pdes", "train"],
}
SOME_FLAGS = {
    "train": ["--channels", "sentinel2", "--version", "3_random", "--lr", "1e-3"],
    "pretrain": ["--dataset", "jumpcp", "--mask-ratio", "0.6", "--no-augment"],
    "change train": ["--tile", "128", "--labels", "strict", "--model-kwargs", '{"depth": 2}'],
    "pdes train": ["--data", "a", "b", "--embed-dim", "32", "--num-pairs", "8"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_print_config_replays_to_identical_text(run_cli, tmp_path, command):
    out = tmp_path / "run"
    argv = [*COMMANDS[command], *SOME_FLAGS[command], "--batch-size", "3", "--seed", "7", "--out", out]
    code, text, err = run_cli(*argv, "--print-config")
    assert code == 0, err
    assert text.startswith(f"# geovit {command} configuration")
    settings = yaml.safe_load(text)
    assert settings["batch_size"] == 3 and settings["seed"] == 7 and settings["out"] == str(out)
    assert not out.exists()  # printing runs nothing and writes nothing
    path = tmp_path / "run.yaml"
    path.write_text(text)
    code, again, err = run_cli(*COMMANDS[command], "--config", path, "--print-config")
    assert code == 0, err
    assert again == text
    code, flagged, _ = run_cli(*COMMANDS[command], "--config", path, "--batch-size", "5", "--print-config")
    assert yaml.safe_load(flagged)["batch_size"] == 5  # flags override the file


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("argv, needle", [
    (["--batch-size", "0"], "--batch-size 0: expected an integer ≥ 1"),
    (["--max-steps", "-5"], "--max-steps -5: expected an integer ≥ 1"),
    (["--precision", "fp7"], "--precision fp7: expected one of"),
    (["--accelerator", "quantum"], "--accelerator quantum: expected one of auto, cpu"),
    (["--devices", "many"], "--devices many: expected a count"),
])
def test_bad_values_exit_2_before_anything_is_written(run_cli, tmp_path, command, argv, needle):
    out = tmp_path / "never"
    code, _, err = run_cli(*COMMANDS[command], *argv, "--out", out)
    assert code == 2 and needle in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_yaml_values_name_file_and_key(run_cli, tmp_path, command):
    path = tmp_path / "bad.yaml"
    path.write_text("batch_size: many\n")
    code, _, err = run_cli(*COMMANDS[command], "--config", path, "--out", tmp_path / "never")
    assert code == 2 and str(path) in err and "batch_size = 'many': expected an integer" in err
    path.write_text("bacth_size: 4\n")
    code, _, err = run_cli(*COMMANDS[command], "--config", path, "--out", tmp_path / "never")
    assert code == 2 and "unknown key 'bacth_size'" in err and not (tmp_path / "never").exists()


def test_gpu_asked_for_on_a_machine_without_one(run_cli, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run_cli("train", "--accelerator", "gpu", "--out", tmp_path / "never")
    assert code == 2 and "--accelerator gpu: expected cpu or auto: no CUDA GPU" in err
