"""`geovit pretrain`: exact resume, 2-process DDP, outputs, bad input (tiny ChA-MAEViT, synthetic data)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from geovit.tasks.pretraining import parameter_digest
from geovit.tasks.base import read_task_checkpoint

REPO = Path(__file__).resolve().parents[2]
TINY = dict(model="chamaevit_tiny_patch8", batch_size=8, warmup_steps=2,
            model_kwargs=dict(embed_dim=24, depth=1, num_heads=2, num_memory_tokens=1, decoder=dict(num_heads=2)))
COMMON = ("--synthetic-samples", "17", "--accelerator", "cpu", "--devices", "1")


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return read_task_checkpoint(ckpt, "chamaevit")[1]


@pytest.fixture(scope="module")
def full_run(tiny_yaml, tmp_path_factory):
    """Two uninterrupted epochs of 2 steps, checkpoint every step; keeps a copy of the epoch-0-end
    ``last.ckpt`` (the file a crash at the start of epoch 1 would have left behind)."""
    from geovit.cli import main
    from geovit.tasks.pretraining import PretrainingTask

    out = tmp_path_factory.mktemp("full")
    original = PretrainingTask.on_train_epoch_start

    def snapshot(self):
        if self.current_epoch == 1:
            shutil.copy(out / "checkpoints" / "last.ckpt", out / "epoch0_end.ckpt")
        original(self)

    # patch.object restores the class as it was (an inherited hook is removed again, not re-set)
    with mock.patch.object(PretrainingTask, "on_train_epoch_start", snapshot):
        assert main(["pretrain", "--config", str(tiny_yaml), "--out", str(out), "--max-epochs", "2",
                     "--ckpt-every", "1", *COMMON]) == 0
    return out


def test_outputs_logs_plots_and_checkpoint(full_run):
    ckpts = sorted(p.name for p in (full_run / "checkpoints").glob("*.ckpt"))
    assert {"last.ckpt", "step-step=1.ckpt"} <= set(ckpts)
    hp, state = read_task_checkpoint(full_run / "checkpoints" / "last.ckpt", "chamaevit")
    assert hp["synthetic"] is True and hp["dataset"] == "so2sat" and hp["model_config"]["embed_dim"] == 24
    assert hp["model_config"]["in_chans"] == 18 and hp["model_config"]["num_classes"] == 17
    metrics = pd.read_csv(full_run / "logs" / "metrics.csv")
    assert metrics["step"].max() == 3 and metrics["train_loss_step"].notna().sum() == 4
    assert metrics["train_loss_ce_step"].dropna().gt(0).all()  # supervised term on (So2Sat has labels)
    assert list((full_run / "tensorboard").glob("events.out.tfevents.*"))
    pngs = sorted(p.name for p in (full_run / "plots").glob("*.png"))
    assert pngs == ["reconstruction_epoch000.png", "reconstruction_epoch001.png"]
    assert not list((full_run / "plots").glob(".*"))  # no temp files left behind
    summary = json.loads((full_run / "run_summary.json").read_text())
    assert summary["global_step"] == 4 and summary["synthetic"] is True


@pytest.mark.parametrize("start", ["epoch0_end.ckpt", "checkpoints/step-step=1.ckpt"], ids=["epoch-end", "mid-epoch"])
def test_resumed_run_ends_with_the_weights_of_the_uninterrupted_run(start, full_run, tiny_yaml, tmp_path, run_cli):
    code, out, err = run_cli("pretrain", "--config", tiny_yaml, "--out", tmp_path, "--max-epochs", "2",
                             "--resume", full_run / start, *COMMON)
    assert code == 0, err
    assert "[SYNTHETIC DATA]" in out
    before = _weights(full_run / start)
    resumed, full = _weights(tmp_path / "checkpoints" / "last.ckpt"), _weights(full_run / "checkpoints" / "last.ckpt")
    assert resumed.keys() == full.keys()
    assert not all(torch.equal(before[k], full[k]) for k in full)  # the resumed part did train
    for k in full:
        assert torch.equal(resumed[k], full[k]), k


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 60), st.integers(1, 4), st.integers(0, 1000), st.integers(0, 5), st.integers(0, 10))
def test_epoch_sampler_order_depends_only_on_seed_and_epoch(n, replicas, seed, epoch, skip):
    from geovit.data.samplers import EpochSampler

    def shard(rank, skip=0):
        s = EpochSampler(range(n), num_replicas=replicas, rank=rank, shuffle=True, seed=seed, skip=skip)
        s.set_epoch(epoch)
        return list(s)

    shards = [shard(r) for r in range(replicas)]
    assert set().union(*shards) == set(range(n))  # every sample seen once per epoch (DistributedSampler pads)
    assert shards == [shard(r) for r in range(replicas)]  # same (seed, epoch) -> same order
    assert shard(0, skip) == shards[0][skip:]  # a resumed epoch drops exactly the consumed samples


def test_seeded_augment_is_a_function_of_seed_epoch_and_index():
    from geovit.data.transforms import RandomFlipRotate
    from geovit.data.samplers import SeededAugment

    base = [{"image": torch.arange(16.0).reshape(1, 4, 4), "channels": torch.tensor([0])}] * 8
    aug = SeededAugment(base, lambda g: RandomFlipRotate(generator=g), seed=3)
    first = [aug[i]["image"] for i in range(8)]
    torch.manual_seed(123)  # the global RNG plays no part
    assert all(torch.equal(a, aug[i]["image"]) for i, a in enumerate(first))
    aug.set_epoch(1)
    assert not all(torch.equal(a, aug[i]["image"]) for i, a in enumerate(first))


def test_parameter_digest_sees_one_changed_weight():
    from geovit.models import create_model

    model = create_model("chamaevit_tiny_patch8", **TINY["model_kwargs"])
    before = parameter_digest(model)
    with torch.no_grad():
        model.norm.bias[0] += 1e-6
    assert parameter_digest(model) != before


def test_ddp_two_processes_on_cpu_keep_identical_replicas(tiny_yaml, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "geovit.cli", "pretrain", "--config", str(tiny_yaml), "--out", str(tmp_path),
         "--max-steps", "1", "--synthetic-samples", "17", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 1
    assert len(summary["rank_parameter_digests"]) == 2 and summary["replicas_identical"] is True
    assert summary["rank_parameter_digests"][0] == str(parameter_digest(_model_of(tmp_path / "checkpoints" / "last.ckpt")))


def _model_of(ckpt: Path):
    from geovit.tasks.pretraining import load_pretrained

    return load_pretrained(ckpt)[0]


@pytest.mark.parametrize("argv, message", [
    (("--channels", "not_a_preset"), "'not_a_preset'"),
    (("--channels", "jumpcp"), "preset 'jumpcp' belongs to table 'jumpcp'"),
    (("--mask-ratio", "1.5"), "--mask-ratio 1.5: expected a number > 0 and < 1"),
    (("--dataset", "chammi", "--data", "/nonexistent/chammi"), "data='/nonexistent/chammi': not found"),
])
def test_bad_arguments_exit_2_without_traceback(argv, message, tiny_yaml, tmp_path, run_cli):
    code, _, err = run_cli("pretrain", "--config", tiny_yaml, "--out", tmp_path, "--max-steps", "1", *COMMON, *argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_ids_outside_the_model_table_and_foreign_checkpoints(tiny_yaml, tmp_path, run_cli):
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump({**TINY, "model_kwargs": {**TINY["model_kwargs"], "in_chans": 8}}))
    code, _, err = run_cli("pretrain", "--config", small, "--out", tmp_path, "--max-steps", "1",
                           "--channels", "sentinel2", *COMMON)
    assert code == 2 and "channel ids [8, 9" in err and "in_chans=8" in err
    foreign = tmp_path / "channelvit.ckpt"
    torch.save({"hyper_parameters": {"family": "channelvit"}, "state_dict": {}}, foreign)
    code, _, err = run_cli("pretrain", "--config", tiny_yaml, "--out", tmp_path, "--max-steps", "1", "--resume", foreign, *COMMON)
    assert code == 2 and "holds a 'channelvit' model" in err and "Traceback" not in err
    (tmp_path / "bad.yaml").write_text("modle: x\n")
    code, _, err = run_cli("pretrain", "--config", tmp_path / "bad.yaml", "--out", tmp_path, *COMMON)
    assert code == 2 and "unknown key 'modle'" in err


def test_chammi_mixed_channel_batches_pretrain_and_probe(tiny_yaml, tmp_path, run_cli):
    """CHAMMI: 3/4/5-channel cells in padded batches, proxy task loss (12-channel table), then the probe."""
    code, out, err = run_cli("pretrain", "--config", tiny_yaml, "--out", tmp_path, "--dataset", "chammi",
                             "--image-size", "16", "--max-steps", "2", "--synthetic-samples", "8",
                             "--accelerator", "cpu", "--devices", "1")
    assert code == 0, err
    hp, _ = read_task_checkpoint(tmp_path / "checkpoints" / "last.ckpt", "chamaevit")
    assert hp["model_config"]["in_chans"] == 12 and hp["model_config"]["num_proxies"] == 10
    metrics = pd.read_csv(tmp_path / "logs" / "metrics.csv")
    assert metrics["train_loss_proxy_step"].dropna().gt(0).all()
    code, out, err = run_cli("probe", tmp_path / "checkpoints" / "last.ckpt", "--k", "1")
    assert code == 0, err
    df = pd.read_csv(tmp_path / "probe" / "probe.csv")
    assert df["channel_set"].tolist() == ["full", "full"] and (df["eval_samples"] == 5).all()
    assert "[SYNTHETIC DATA]" in out


def test_jumpcp_pretrain_uses_the_8_channel_table(tiny_yaml, tmp_path, run_cli):
    code, _, err = run_cli("pretrain", "--config", tiny_yaml, "--out", tmp_path, "--dataset", "jumpcp",
                           "--channels", "jumpcp_brightfield", "--image-size", "16", "--max-steps", "1",
                           "--batch-size", "4", "--synthetic-samples", "10", "--accelerator", "cpu", "--devices", "1")
    assert code == 0, err
    hp, _ = read_task_checkpoint(tmp_path / "checkpoints" / "last.ckpt", "chamaevit")
    assert hp["model_config"]["in_chans"] == 8 and hp["channel_names"] == ["HighZBF", "LowZBF", "Brightfield"]
    assert hp["model_config"]["img_size"] == 16 and hp["model_config"]["num_classes"] == 4


OPTIONS = ("--decoder-type", "camae_decoder", "--use-self-image-norm", "--channel-sampling", "hcs",
           "--channel-sampling-min", "2", "--channel-sampling-max", "12")


def test_reference_options_train_and_resume_exactly(tiny_yaml, tmp_path, run_cli):
    """Per-channel decoders + self image norm + HCS: the options reach the model and the checkpoint,
    and a run resumed mid-way (HCS draws re-seeded every step) ends with the uninterrupted weights."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    code, _, err = run_cli("pretrain", "--config", tiny_yaml, "--out", full, "--max-steps", "3", "--ckpt-every", "1",
                           *OPTIONS, *COMMON)
    assert code == 0, err
    hp, state = read_task_checkpoint(full / "checkpoints" / "last.ckpt", "chamaevit")
    mc = hp["model_config"]
    assert mc["decoder"]["decoder_type"] == "camae_decoder" and mc["use_self_image_norm"] is True
    assert (mc["channel_sampling"], mc["channel_sampling_min"], mc["channel_sampling_max"]) == ("hcs", 2, 12)
    assert "model.decoder.decoders.17.0.attn.qkv.weight" in state and "model.decoder.blocks.0.norm1.weight" not in state
    config = yaml.safe_load((full / "config.yaml").read_text())
    assert config["decoder_type"] == "camae_decoder" and config["channel_sampling_min"] == 2
    code, _, err = run_cli("pretrain", "--config", full / "config.yaml", "--out", resumed,
                           "--resume", full / "checkpoints" / "step-step=1.ckpt")
    assert code == 0, err
    a, b = _weights(full / "checkpoints" / "last.ckpt"), _weights(resumed / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_reference_options_on_padded_chammi_batches(tiny_yaml, tmp_path, run_cli):
    code, _, err = run_cli("pretrain", "--config", tiny_yaml, "--out", tmp_path, "--dataset", "chammi",
                           "--image-size", "16", "--max-steps", "2", "--synthetic-samples", "8", *OPTIONS[:5],
                           "--accelerator", "cpu", "--devices", "1")
    assert code == 0, err
    metrics = pd.read_csv(tmp_path / "logs" / "metrics.csv")
    assert metrics["train_loss_step"].dropna().gt(0).all()
