"""``geovit pdes {train,rollout,synth}``: train VICON on fluid data, roll it out, generate data.

Examples::

    geovit pdes synth data/ns2d --kind ns2d --resolution 32 --num-train 64
    geovit pdes synth data/cfd2d --kind cfd2d --layout vicon --mach 1.0
    geovit pdes train --data data/ns2d data/cfd2d --out runs/vicon --max-steps 2000
    geovit pdes train --out runs/demo                # no data: generates OUT/synthetic_data first
    geovit pdes rollout runs/vicon/checkpoints/last.ckpt --data data/ns2d \\
        --strategy multi_repeat --max-stride 5 --out runs/vicon/rollout
    geovit pdes rollout CKPT --data DIR --drop-frames 1,3,5,7     # or: --drop-frames mask
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from geovit.errors import DataError, GeovitError

# ---------------------------------------------------------------------------- train
def _train(args: argparse.Namespace) -> int:
    import lightning as L

    from geovit.cli.options import print_config_and_exit, resolve_config
    from geovit.training import build_trainer, fit, output_dir, resume_path
    from pdes.config import VICONConfig
    from pdes.datamodule import VICONDataModule
    from pdes.datasets import resolve_vicon_data
    from pdes.training import VICONTask

    cfg = resolve_config(args, VICONConfig)
    if print_config_and_exit(args, cfg):
        return 0
    ckpt = resume_path(cfg, VICONTask.family)
    out = output_dir(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    roots = resolve_vicon_data(cfg.data, out, resolution=cfg.synthetic_resolution,
                               trajectories=cfg.synthetic_trajectories, seed=cfg.seed)
    dm = VICONDataModule(roots, num_pairs=cfg.num_pairs, max_stride=cfg.max_stride, channels=cfg.channels,
                         frame_size=cfg.frame_size, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                         seed=cfg.seed)
    dm.setup("fit")
    max_steps = int(cfg.max_steps)
    task = VICONTask(cfg.model_config(dm.frame_size), lr=cfg.lr, weight_decay=cfg.weight_decay,
                     warmup_steps=cfg.warmup_steps, total_steps=cfg.total_steps or max_steps, min_ex=cfg.min_ex,
                     datasets=[str(Path(r).resolve()) for r in roots], seed=cfg.seed)
    frame = dm.frame_size
    print("training VICON on " + ", ".join(f"{d.name} ({len(d)} trajectories)" for d in dm.train_datasets)
          + f"; frames {frame}x{frame}, {sum(p.numel() for p in task.model.parameters()):,} parameters")
    valid = dm.has_validation
    trainer = build_trainer(cfg, monitor=task.monitor if valid else None, mode=task.monitor_mode, max_steps=max_steps,
                            gradient_clip_val=cfg.grad_clip,
                            check_val_every_n_epoch=None, val_check_interval=min(max_steps, 200) if valid else None,
                            limit_val_batches=4 if valid else 0, log_every_n_steps=max(1, min(50, max_steps // 20)))
    fit(trainer, task, dm, ckpt)
    print(f"checkpoints in {out / 'checkpoints'}, logs in {out / 'logs'}")
    return 0


# ---------------------------------------------------------------------------- rollout
def _dropped_masks(spec: str | None, ds, rows: list[int], gt_steps: int):
    import torch

    if spec is None:
        return None
    T = ds.num_frames
    if spec == "mask":
        missing = [s.path for s in ds.sources if not s.has_dropped]
        if missing:
            raise DataError(f"{missing[0]}: --drop-frames mask needs the key 'dropped_mask' (N, T) bool in every file")
        return torch.stack([ds.dropped(i) for i in rows])
    try:
        drop = sorted({int(t) for t in spec.split(",") if t.strip()})
    except ValueError:
        raise GeovitError(f"--drop-frames {spec!r}: expected 'mask' or comma-separated frame indices, e.g. 1,3,5") from None
    bad = [t for t in drop if not 0 <= t < gt_steps]
    if bad:
        raise GeovitError(f"--drop-frames {spec!r}: frames {bad} are not among the given frames 0..{gt_steps - 1}")
    mask = torch.zeros(T, dtype=torch.bool)
    mask[drop] = True
    return mask.expand(len(rows), T)


def _rollout(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from geovit.progress import progress

    from pdes import metrics
    from pdes.data import TrajectoryDataset
    from pdes.plots import rollout_table, write_error_curve, write_strip, write_table
    from pdes.rollout import BASELINES, evaluate_rollout, make_strategy, rollout

    model = _load_model(args)
    device = torch.device("cuda" if torch.cuda.is_available() and args.accelerator != "cpu" else "cpu")
    model.to(device)
    ds = TrajectoryDataset(args.data, args.split, channels=args.channels.split(",") if args.channels else None,
                           frame_size=model.frame_size if args.frame_size is None else args.frame_size,
                           min_frames=args.gt_steps + 1)
    if ds.frame_size != model.frame_size:
        raise DataError(f"--data {args.data}: frames are {ds.frame_size}x{ds.frame_size}, the model takes "
                        f"{model.frame_size}x{model.frame_size}")
    make_strategy(args.strategy, ds.num_frames, args.gt_steps, args.num_examples, args.max_stride)  # validate early
    n = len(ds) if args.max_trajectories is None else min(len(ds), args.max_trajectories)
    if not 0 <= args.plot_trajectory < n:
        raise GeovitError(f"--plot-trajectory {args.plot_trajectory}: expected 0..{n - 1} ({n} trajectories evaluated)")
    mask = torch.from_numpy(ds.channel_mask)
    errors: dict[str, dict[str, list]] = {}  # "model" and every baseline -> scheme -> per-batch errors
    strip = None
    for start in progress(range(0, n, args.batch_size), desc="rollout", unit="batch"):
        rows = list(range(start, min(start + args.batch_size, n)))
        traj = torch.stack([ds.read(i) for i in rows]).to(device)
        drops = _dropped_masks(args.drop_frames, ds, rows, args.gt_steps)
        res = rollout(model, traj, mask, args.strategy, gt_steps=args.gt_steps, num_examples=args.num_examples,
                      max_stride=args.max_stride, dropped_mask=drops)
        for name, by_scheme in evaluate_rollout(res, traj, mask).items():
            for s, err in by_scheme.items():
                errors.setdefault(name, {}).setdefault(s, []).append(err)
        if args.plot_trajectory in rows:
            pred, gt = res.future[:, :, :-1].cpu(), traj[:, args.gt_steps:, :-1].cpu()
            done = res.predicted[:, args.gt_steps:].cpu()
            k = rows.index(args.plot_trajectory)
            strip = (gt[k], pred[k], done[k])
    errors = {name: {s: torch.cat(e).numpy() for s, e in by_scheme.items()} for name, by_scheme in errors.items()}
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / "rollout"
    files = [ds.locate(i) for i in range(n)]
    ids = [{"trajectory": i, "file": Path(files[i][0].path).name, "index": files[i][1]} for i in range(n)]
    table = rollout_table(errors, ids)
    mean_row = table[-1]
    write_table(out / "rollout_errors.csv", table)
    times = np.arange(args.gt_steps, ds.num_frames)
    write_error_curve(out / "error_vs_time.png", times, errors["model"],
                      title=f"{ds.spec.name}: {args.strategy}, max stride {args.max_stride}",
                      baselines={k: v for k, v in errors.items() if k != "model"}, label="VICON")
    written = [out / "rollout_errors.csv", out / "error_vs_time.png"]
    if strip is not None:
        from pdes.data import SLOTS

        fields = [s for s, m in zip(SLOTS[:-1], ds.channel_mask[:-1]) if m]  # node_type is geometry, not plotted
        slot = args.plot_channel or fields[0]
        if slot not in fields:
            raise GeovitError(f"--plot-channel {slot}: expected one of the fields of {ds.spec.name}: {fields}")
        path = out / f"trajectory_{args.plot_trajectory}_{slot}.png"
        write_strip(path, *strip, channel=SLOTS.index(slot), times=times, label=slot)
        written.append(path)
    print(f"{ds.spec.name} {args.split}: {n} trajectories, strategy {args.strategy}, max stride {args.max_stride}"
          + (f", dropped frames {args.drop_frames}" if args.drop_frames else ""))
    for s in metrics.SCHEMES:
        print(f"  last-step error ({s}): {mean_row[f'last_step_{s}']:.4f}   time-mean: {mean_row[f'mean_{s}']:.4f}")
        for name, what in BASELINES.items():
            print(f"    baseline {name} ({what}): last-step {mean_row[f'{name}_last_step_{s}']:.4f}   "
                  f"time-mean: {mean_row[f'{name}_mean_{s}']:.4f}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _load_model(args: argparse.Namespace):
    """geovit ``*.ckpt`` / ``*.safetensors``, or an official ``*_params.pth`` with ``--official-config``."""
    from pdes.training import load_trained

    if args.official_config is None:
        if Path(args.checkpoint).suffix in (".pth", ".pt"):
            raise GeovitError(f"checkpoint {args.checkpoint}: an official VICON state dict needs --official-config "
                              "(JSON of the official constructor config: transformer sizes, demo_num, patch counts)")
        return load_trained(args.checkpoint)
    from geovit.hub import load_official

    path = Path(args.official_config)
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise GeovitError(f"--official-config {path}: not a readable JSON file ({err})") from None
    if not isinstance(cfg, dict):
        raise GeovitError(f"--official-config {path}: expected a JSON object (the official constructor config)")
    return load_official("vicon", args.checkpoint, cfg.get("constructor_cfg", cfg))


# ---------------------------------------------------------------------------- synth
def _synth(args: argparse.Namespace) -> int:
    from pdes import synthetic

    splits = {"train": args.num_train, "valid": args.num_valid, "test": args.num_test}
    common = dict(splits=splits, resolution=args.resolution, seed=args.seed, dropped_every=args.dropped_every)
    if args.kind == "ns2d":
        if args.layout not in (None, "pdearena"):
            raise GeovitError(f"--layout {args.layout}: ns2d data is written in the PDEArena layout only")
        frames = args.frames or 24
        paths = synthetic.write_ns2d(args.out_dir, num_frames=frames, buoyancy=args.buoyancy, backend=args.backend,
                                     **common)
    else:
        if args.layout == "pdearena":
            raise GeovitError("--layout pdearena: cfd2d data is written as 'pdebench' or 'vicon'")
        frames = args.frames or 21
        paths = synthetic.write_cfd2d(args.out_dir, num_frames=frames, mach=args.mach, eta=args.viscosity,
                                      zeta=args.viscosity, layout=args.layout or "pdebench", **common)
    print(f"wrote SYNTHETIC {args.kind} data (real solver, tiny sizes; not the released data) to {args.out_dir}: "
          f"{len(paths)} file(s), {args.resolution}x{args.resolution}, {frames} frames")
    return 0


# ---------------------------------------------------------------------------- parsers
def add_commands(sub) -> None:
    """Register ``geovit pdes {synth,train,rollout}`` on the ``geovit`` subparsers ``sub`` (entry point ``geovit.commands``)."""
    from geovit.cli.options import add_config_flags, bounded, positive_int
    from pdes.config import VICONConfig

    p = sub.add_parser("pdes", help="VICON: in-context operator learning and rollout of fluid fields")
    psub = p.add_subparsers(dest="pdes_command", metavar="ACTION", required=True)

    t = psub.add_parser("train", help="train VICON on PDEArena / PDEBench data sets (one batch of each per step)")
    add_config_flags(t, VICONConfig)
    t.set_defaults(func=_train)

    r = psub.add_parser("rollout", help="autoregressive rollout: last-step errors (CSV) and plots (PNG)")
    r.add_argument("checkpoint", help="geovit VICON checkpoint (*.ckpt from 'pdes train', geovit *.safetensors) "
                                      "or an official *_params.pth with --official-config")
    r.add_argument("--official-config", default=None,
                   help="JSON with the official VICON constructor config (or a dict with key 'constructor_cfg')")
    r.add_argument("--data", required=True, help="data set folder or file")
    r.add_argument("--split", default="test", choices=("train", "valid", "test"))
    r.add_argument("--strategy", default="single_step",
                   help="single_step, multi_norepeat, multi_repeat (or the official fixed_* names)")
    r.add_argument("--max-stride", type=positive_int, default=1)
    r.add_argument("--gt-steps", type=positive_int, default=10, help="given (ground-truth) frames")
    r.add_argument("--num-examples", type=positive_int, default=9, help="example pairs per prompt")
    r.add_argument("--drop-frames", default=None,
                   help="'mask' (use the files' dropped_mask) or frame indices among the given ones, e.g. 1,3,5")
    r.add_argument("--channels", default=None, help="comma-separated slots to evaluate (default: all fields)")
    r.add_argument("--frame-size", type=positive_int, default=None, help="average-pool frames to this size")
    r.add_argument("--batch-size", type=positive_int, default=8, help="trajectories per model call")
    r.add_argument("--max-trajectories", type=positive_int, default=None)
    r.add_argument("--plot-trajectory", type=bounded(int, 0), default=0, help="trajectory shown in the PNG strip")
    r.add_argument("--plot-channel", default=None, help="slot shown in the strip (default: first field)")
    r.add_argument("--accelerator", default="auto", help="cpu or auto (cuda when present)")
    r.add_argument("--out", default=None, help="output folder (default: CKPT folder/rollout)")
    r.set_defaults(func=_rollout)

    s = psub.add_parser("synth", help="generate small data sets with real solvers in the PDEArena/PDEBench formats")
    s.add_argument("out_dir")
    s.add_argument("--kind", required=True, choices=("ns2d", "cfd2d"),
                   help="ns2d: buoyancy-driven smoke (PDEArena); cfd2d: compressible Navier-Stokes (PDEBench)")
    s.add_argument("--layout", default=None, choices=("pdearena", "pdebench", "vicon"))
    s.add_argument("--resolution", type=positive_int, default=32)
    s.add_argument("--frames", type=positive_int, default=None, help="frames per trajectory (ns2d 24, cfd2d 21)")
    s.add_argument("--num-train", type=positive_int, default=24)
    s.add_argument("--num-valid", type=bounded(int, 0), default=4)
    s.add_argument("--num-test", type=bounded(int, 0), default=4)
    s.add_argument("--seed", type=bounded(int, 0), default=0)
    s.add_argument("--buoyancy", type=bounded(float), default=None, help="ns2d buoyancy (default: drawn from [0.2, 0.5])")
    s.add_argument("--backend", default="numpy", choices=("numpy", "phiflow"),
                   help="ns2d solver: geovit's numpy re-implementation, or PDEArena's recipe via phiflow (optional)")
    s.add_argument("--mach", type=bounded(float, 0, open_low=True), default=0.1, help="cfd2d Mach number of the random initial velocity")
    s.add_argument("--viscosity", type=bounded(float, 0), default=1e-8, help="cfd2d shear = bulk viscosity")
    s.add_argument("--dropped-every", type=positive_int, default=None,
                   help="also write dropped_mask: every k-th frame of the first 10 unavailable")
    s.set_defaults(func=_synth)
