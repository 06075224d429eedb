"""``--compile`` on every training command: the flag, its checks, and a compiled run's losses."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml

from geovit.config import (
    ChangeConfig,
    ClassifyConfig,
    ConfigError,
    PretrainConfig,
    compile_unavailable,
)
from geovit.tasks.base import read_task_checkpoint

TINY = dict(model="chamaevit_tiny_patch8", batch_size=4, warmup_steps=1, max_steps=2, augment=False,
            model_kwargs=dict(embed_dim=24, depth=1, num_heads=2, num_memory_tokens=1,
                              decoder=dict(num_heads=2, dcp_p_patch=1.0, dcp_p_channel=0.0)))  # one token count: one compile
COMMON = ("--synthetic-samples", "17", "--accelerator", "cpu", "--devices", "1")


def test_every_training_command_has_the_flag(run_cli):
    from pdes.config import VICONConfig

    for cls in (ClassifyConfig, PretrainConfig, ChangeConfig, VICONConfig):
        assert cls.fields()["compile"].default is False  # off by default: today's behaviour
    for command in (("train",), ("pretrain",), ("change", "train"), ("pdes", "train")):
        code, out, err = run_cli(*command, "--print-config", "--compile")
        assert code == 0, err
        assert yaml.safe_load(out)["compile"] is True


def test_missing_cpu_compiler_is_a_clear_error(monkeypatch, run_cli, tmp_path):
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    problem = compile_unavailable("cpu")
    assert problem and "C++ compiler" in problem and "/nonexistent/g++" in problem
    with pytest.raises(ConfigError) as err:
        PretrainConfig.from_dict({"compile": True, "accelerator": "cpu"})
    assert err.value.key == "compile"
    code, _, err = run_cli("pretrain", "--compile", "--out", tmp_path, "--max-steps", "1", *COMMON)
    assert code == 2 and "--compile True: expected false: torch.compile on the CPU needs a C++ compiler" in err
    assert "Traceback" not in err


@pytest.mark.skipif(compile_unavailable("cpu") is not None, reason=f"torch.compile unavailable: {compile_unavailable('cpu')}")
def test_compiled_run_has_the_losses_of_the_eager_run(tmp_path, run_cli):
    """Two steps of a tiny ChA-MAEViT, compiled and eager: same losses (float tolerance), and the
    compiled run's checkpoint has the eager run's keys (compiled in place, no ``_orig_mod.``)."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    losses, keys = {}, {}
    for name, extra in (("eager", ()), ("compiled", ("--compile",))):
        code, out, err = run_cli("pretrain", "--config", cfg, "--out", tmp_path / name, *extra, *COMMON)
        assert code == 0, err
        assert ("torch.compile:" in out) == (name == "compiled")
        metrics = pd.read_csv(tmp_path / name / "logs" / "metrics.csv")
        losses[name] = metrics["train_loss_step"].dropna().tolist()
        keys[name] = set(read_task_checkpoint(tmp_path / name / "checkpoints" / "last.ckpt", "chamaevit")[1])
    assert len(losses["eager"]) == 2
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-4, abs=1e-5)
    assert keys["compiled"] == keys["eager"]
