"""Helpers of the scene tests: tiny checkpoints, a bare command parser."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

WINDOW = 16


def tiny_classifier(seed: int = 0):
    """A tiny 18-band ChannelViT classifier whose outputs vary from window to window."""
    from geovit.tasks.classification import ClassificationTask

    torch.manual_seed(seed)
    task = ClassificationTask(model="channelvit_tiny_patch16", channel_ids=list(range(18)), num_classes=17,
                              model_kwargs=dict(in_chans=18, img_size=WINDOW, embed_dim=24, depth=1, num_heads=2))
    with torch.no_grad():  # large weights: the random model is far from constant
        for p in task.model.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.6)
    return task.eval()


def save_task(task, path: Path) -> Path:
    """A geovit training checkpoint (hyper-parameters + state dict), as the training commands write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper_parameters": dict(task.hparams), "state_dict": task.state_dict(), "epoch": 0}, path)
    return path


def parser_with(*modules) -> argparse.ArgumentParser:
    """A bare ``geovit`` parser holding only the given command modules."""
    p = argparse.ArgumentParser(prog="geovit")
    sub = p.add_subparsers(dest="command", required=True)
    for m in modules:
        m.add_commands(sub)
    return p

