"""`--devices 2`: the window grid sharded over two CPU processes (Lightning DDP) gives the single-device map."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import rasterio

from geovit.predict import predict_scene


def test_two_cpu_processes_assemble_the_single_device_map(classifier, half_clouded, tmp_path):
    ckpt, _ = classifier
    single = tmp_path / "single.tif"
    predict_scene(ckpt, [half_clouded.s2, half_clouded.s1], single, masks=[str(half_clouded.cloud_mask)],
                  probabilities=tmp_path / "single_p.tif", preview=False, batch_size=8, progress=False, device="cpu")
    script = tmp_path / "shard.py"
    # small chunks (at least batch size 8 windows, 20 kB budget): several chunks on each rank
    script.write_text(textwrap.dedent(f"""
        import json
        from geovit.predict import predict_scene

        stats = predict_scene({str(ckpt)!r}, [{str(half_clouded.s2)!r}, {str(half_clouded.s1)!r}],
                              {str(tmp_path / 'sharded.tif')!r}, masks=[{str(half_clouded.cloud_mask)!r}],
                              probabilities={str(tmp_path / 'sharded_p.tif')!r}, preview=False, batch_size=8,
                              devices=2, accelerator="cpu", strategy="ddp", progress=False, chunk_mb=0.02)
        print("STATS", stats["rank"], json.dumps(stats.get("chunks")), json.dumps(stats.get("world_size")), flush=True)
    """))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("STATS")]
    assert sorted(line.split()[1] for line in lines) == ["0", "1"]  # both ranks ran; rank 0 reports the chunks
    rank0 = next(line for line in lines if line.split()[1] == "0").split()
    assert int(rank0[2]) > 2 and int(rank0[3]) == 2
    with rasterio.open(single) as a, rasterio.open(tmp_path / "sharded.tif") as b:
        assert a.profile == b.profile and a.tags() == b.tags()
        np.testing.assert_array_equal(a.read(), b.read())
    with rasterio.open(tmp_path / "single_p.tif") as a, rasterio.open(tmp_path / "sharded_p.tif") as b:
        np.testing.assert_allclose(a.read(), b.read(), atol=1e-6)
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == sorted(["sharded.tif", "sharded_p.tif", "shard.py", "single.tif", "single_p.tif"])
