"""A real ``kill -9`` in the middle of every training command, then ``--resume last``.

Each case runs the command twice in subprocesses with the same seed: once uninterrupted, once
killed (SIGKILL) after a step checkpoint exists, and then resumed with ``--resume last`` (the
newest checkpoint the run wrote — mid-epoch, possibly inside the first epoch). The final weights
must be bit-identical on the CPU.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from geovit.hub import read_checkpoint

TINY_VIT = '{"embed_dim": 24, "depth": 1, "num_heads": 2}'
CASES = {
    # command, flags, the step checkpoint after which the run is killed (before the end of epoch 1)
    "train": (["train"], ["--max-steps", "7", "--synthetic-samples", "48", "--batch-size", "8",
                          "--warmup-steps", "2", "--model-kwargs", TINY_VIT], 4),
    "pretrain": (["pretrain"], ["--max-steps", "7", "--synthetic-samples", "40", "--batch-size", "8",
                                "--warmup-steps", "2", "--model", "chamaevit_tiny_patch8", "--model-kwargs",
                                '{"embed_dim": 24, "depth": 1, "num_heads": 2, "num_memory_tokens": 1, '
                                '"decoder": {"num_heads": 2}}'], 3),
    "change-train": (["change", "train"], ["--max-steps", "5", "--tile", "32", "--batch-size", "2",
                                           "--warmup-steps", "2", "--data", "{levircd}"], 3),
    "pdes-train": (["pdes", "train"], ["--max-steps", "7", "--batch-size", "2", "--embed-dim", "16", "--depth", "1",
                                       "--mlp-dim", "32", "--num-heads", "2", "--dropout", "0.1",
                                       "--warmup-steps", "2", "--synthetic-trajectories", "6",
                                       "--synthetic-resolution", "16"], 3),
}


@pytest.fixture(scope="module")
def levircd(tmp_path_factory):
    from geovit.data.levircd import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("levircd") / "levir", num_samples=3, size=64)


def _start(command, flags, out: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "geovit.cli", *command, *flags, "--out", str(out), "--ckpt-every", "1",
            "--accelerator", "cpu", "--devices", "1", "--seed", "3", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    err = open(f"{out}.stderr", "w")  # a file, not a pipe: a full pipe would block the run
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    ckpt = read_checkpoint(out / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] > 0
    return ckpt["state_dict"]


@pytest.mark.parametrize("case", list(CASES))
def test_kill_9_then_resume_last_ends_with_the_uninterrupted_weights(case, levircd, tmp_path):
    command, flags, kill_after = CASES[case]
    flags = [str(levircd) if f == "{levircd}" else f for f in flags]
    full = _start(command, flags, tmp_path / "full")  # runs alongside the killed one
    part = _start(command, flags, tmp_path / "part")
    target = tmp_path / "part" / "checkpoints" / f"step-step={kill_after}.ckpt"
    deadline = time.monotonic() + 300
    while not target.exists():
        assert part.poll() is None, Path(f"{tmp_path / 'part'}.stderr").read_text()[-2000:]
        assert time.monotonic() < deadline, "no step checkpoint within 300 s"
        time.sleep(0.02)
    part.send_signal(signal.SIGKILL)
    assert part.wait() == -signal.SIGKILL
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "part" / "checkpoints").glob("step-*.ckpt")}
    resumed = _start(command, flags, tmp_path / "part", "--resume", "last")
    for proc, out in ((full, tmp_path / "full"), (resumed, tmp_path / "part")):
        assert proc.wait(timeout=600) == 0, Path(f"{out}.stderr").read_text()[-3000:]
    # the resumed run continued after the kill: it did not rewrite the step checkpoints before it
    assert written and all(p.stat().st_mtime_ns == t for p, t in written.items())
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{case}: {key} differs after kill -9 + --resume last"
