"""The task base class: optimiser groups, schedules, checkpoint reading (geovit.tasks.base)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geovit.errors import CheckpointError
from geovit.tasks.base import (BaseTask, build_optimizer, build_scheduler, find_checkpoint, warmup_cosine_factor,
                               warmup_poly_factor)
from geovit.tasks.classification import ClassificationTask


def _official_vicon_factor(step: int, warmup: int, total: int) -> float:
    """VICON's schedule as its paper states it: linear 0 -> 1 over the warm-up, cosine to 0 at the end."""
    if warmup > 0 and step < warmup:
        return step / warmup
    progress = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _lrs(name: str, steps: int, **kwargs) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, name, **kwargs)["scheduler"]
    out = []
    for step in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if hasattr(sched, "step_update"):
            sched.step_update(num_updates=step + 1)
        else:
            sched.step()
    return out


@settings(max_examples=25, deadline=None)
@given(warmup=st.integers(0, 30), extra=st.integers(1, 60))
def test_timm_cosine_is_the_official_vicon_schedule(warmup, extra):
    total = warmup + extra
    got = _lrs("cosine", total + 5, warmup_steps=warmup, total_steps=total)
    want = [_official_vicon_factor(s, warmup, total) for s in range(total + 5)]
    assert got == pytest.approx(want, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(warmup=st.integers(1, 20), extra=st.integers(1, 40))
def test_hand_written_recipes(warmup, extra):
    total = warmup + extra
    cos = _lrs("warmup_cosine", total, warmup_steps=warmup, total_steps=total)
    assert cos[0] == pytest.approx(1 / warmup) and cos[warmup - 1] == pytest.approx(1.0)
    assert all(0.002 - 1e-12 <= v <= 1 + 1e-12 for v in cos)
    assert cos == [warmup_cosine_factor(s, warmup, total) for s in range(total)]
    poly = _lrs("warmup_poly", total, warmup_steps=warmup, total_steps=total, power=0.9)
    assert poly[0] == pytest.approx(0.1 + 0.9 / warmup)
    assert poly[warmup] == pytest.approx((1 - warmup / total) ** 0.9)
    assert poly == [warmup_poly_factor(s, warmup, total) for s in range(total)]


def test_weight_decay_skips_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    opt = build_optimizer(model, name="adamw", lr=1e-3, weight_decay=0.05)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.05 for p in g["params"]}
    assert decayed == {id(model[0].weight), id(model[2].weight)}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    every = build_optimizer(model, name="adam", lr=1e-3, weight_decay=1e-4, decay_norms_and_biases=True)
    assert isinstance(every, torch.optim.Adam) and every.param_groups[0]["weight_decay"] == 1e-4
    assert len(every.param_groups[0]["params"]) == len(list(model.parameters()))


def _tiny_classifier(**kw) -> ClassificationTask:
    return ClassificationTask(model="channelvit_tiny_patch16", channel_ids=list(range(4)), num_classes=3,
                              model_kwargs=dict(in_chans=4, img_size=16, embed_dim=24, depth=1, num_heads=2), **kw)


def test_hyper_parameters_carry_the_family_and_reload(tmp_path):
    task = _tiny_classifier(lr=1e-3)
    assert task.hparams["family"] == "channelvit" and task.hparams["lr"] == 1e-3
    assert "family" not in ClassificationTask.init_arguments() and "lr" in ClassificationTask.init_arguments()
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"hyper_parameters": dict(task.hparams), "state_dict": task.state_dict()}, path)
    again = ClassificationTask.load_from_checkpoint(tmp_path / "run")  # a run folder finds last.ckpt
    assert not again.training
    x = torch.randn(2, 4, 16, 16)
    ids = torch.arange(4)
    torch.testing.assert_close(again(x, ids), task.eval()(x, ids))


def test_load_refuses_other_families_foreign_files_and_misfit_weights(tmp_path):
    task = _tiny_classifier()
    hp = dict(task.hparams)
    other = tmp_path / "other.ckpt"
    torch.save({"hyper_parameters": {**hp, "family": "vicon"}, "state_dict": task.state_dict()}, other)
    with pytest.raises(CheckpointError, match="holds a 'vicon' model, but a 'channelvit' checkpoint"):
        ClassificationTask.load_from_checkpoint(other)
    plain = tmp_path / "plain.pt"
    torch.save(task.model.state_dict(), plain)
    with pytest.raises(CheckpointError, match="not a geovit training checkpoint"):
        ClassificationTask.load_from_checkpoint(plain)
    misfit = tmp_path / "misfit.ckpt"
    state = {k: v for k, v in task.state_dict().items() if "head" not in k}
    torch.save({"hyper_parameters": hp, "state_dict": state}, misfit)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        ClassificationTask.load_from_checkpoint(misfit)
    with pytest.raises(CheckpointError, match="holds no best"):
        find_checkpoint(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else None)


def test_data_position_is_saved_and_restored():
    task = _tiny_classifier()
    task._position = (3, 5)
    ckpt: dict = {}
    task.on_save_checkpoint(ckpt)
    fresh = _tiny_classifier()
    fresh.on_load_checkpoint(ckpt)
    assert fresh.resume_position == (3, 5) and fresh._position == (3, 5)
    fresh.on_load_checkpoint({})
    assert fresh.resume_position is None


def test_every_task_names_its_family_and_builds_in_its_hooks():
    from geovit.tasks.change import ChangeDetectionTask
    from geovit.tasks.pretraining import PretrainingTask
    from pdes.training import VICONTask

    families = {t.family for t in (ClassificationTask, PretrainingTask, ChangeDetectionTask, VICONTask)}
    assert families == {"channelvit", "chamaevit", "changevit", "vicon"}
    with pytest.raises(NotImplementedError):
        BaseTask()
