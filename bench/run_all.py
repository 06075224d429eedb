"""Run every benchmark once with short settings and collect one JSON file and one markdown table.

Each script runs in its own process with ``--device`` (default: cuda when present). Scripts that
write ``--json`` give samples/s, peak memory and the fraction of the device's measured matmul
peak for the table; of the others the table keeps the exit status and the output's last lines
are in the JSON. Meant for one short run on a GPU machine (a few minutes); ``--quick`` shrinks
every setting further (a smoke run on a CPU).

    python bench/run_all.py [--device cuda] [--quick] [--out bench_results] [--only so2sat_read,levircd_read]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import default_device, device_line, load_average  # noqa: E402

#: script -> (arguments of the short run, arguments of the quick run, writes --json)
BENCHES: dict[str, tuple[list[str], list[str], bool]] = {
    "so2sat_read": (["--samples", "20000", "--rounds", "5"], ["--quick"], True),
    "levircd_read": (["--scenes", "8", "--rounds", "5"], ["--quick"], True),
    "channelvit_forward": (["--repeat", "3"], ["--quick"], True),
    "changevit_forward": (["--repeat", "3"], ["--quick"], True),
    "vicon_rollout": (["--repeat", "3"], ["--quick"], True),
    "chamaevit_pretrain": (["--rounds", "5"], ["--only", "32", "--rounds", "1"], True),
    "changevit_predict": (["--sizes", "2048", "4096", "--model-sizes", "512"], ["--quick"], True),
    "predict_scene": (["--sizes", "1024", "2048", "--rounds", "2"],
                      ["--sizes", "256", "--throughput-size", "128", "--throughput-models", "stand-in", "--rounds", "1"],
                      False),
    "cate_pipeline": (["--units", "2000", "--rate-units", "200000"],
                      ["--units", "300", "--scales", "16,32", "--trees", "50", "--rate-units", "20000"], False),
}


def _first(result: dict, *keys: str):
    """The first value named by one of ``keys`` in a (nested) result dict (depth first)."""
    for key in keys:
        if key in result:
            return result[key]
    for value in result.values():
        for item in ([value] if isinstance(value, dict) else value if isinstance(value, list) else []):
            if isinstance(item, dict):
                found = _first(item, *keys)
                if found is not None:
                    return found
    return None


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def run_one(name: str, args: list[str], device: str, json_path: Path | None, timeout: float) -> dict:
    cmd = [sys.executable, str(HERE / f"{name}.py"), *args, "--device", device]
    if json_path is not None:
        cmd += ["--json", str(json_path)]
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ})
        status, out, err = res.returncode, res.stdout, res.stderr
    except subprocess.TimeoutExpired as exc:
        status, out, err = "timeout", exc.stdout or "", exc.stderr or ""
        out = out.decode() if isinstance(out, bytes) else out
        err = err.decode() if isinstance(err, bytes) else err
    row = {"bench": name, "command": " ".join(cmd[1:]), "status": status, "wall_s": time.perf_counter() - t0,
           "stdout_tail": out.strip().splitlines()[-15:]}
    if status != 0:
        row["stderr_tail"] = err.strip().splitlines()[-10:]
    if json_path is not None and json_path.is_file():
        row["result"] = json.loads(json_path.read_text())
    return row


def table(rows: list[dict]) -> str:
    lines = ["| benchmark | status | samples/s | ratio vs baseline | peak MiB | fraction of matmul peak | wall s |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        r = row.get("result", {})
        rate = _first(r, "samples_per_s", "img_per_s", "steps_per_s")
        ratio = _first(r, "ratio_vs_baseline", "ratio", "speedup_median_of_rounds")
        peak = _first(r, "peak_mib", "peak_memory_mib")
        frac = _first(r, "frac_matmul_peak", "fraction_of_matmul_peak")
        lines.append(f"| {row['bench']} | {row['status']} | {_fmt(rate)} | {_fmt(ratio)} | {_fmt(peak)} "
                     f"| {_fmt(frac)} | {row['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=default_device(), help="passed to every script (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="smallest settings (a CPU smoke run)")
    ap.add_argument("--out", default="bench_results", help="folder of results.json and results.md")
    ap.add_argument("--only", default=None, help="comma list of benchmarks (default: all)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per benchmark")
    args = ap.parse_args(argv)
    names = list(BENCHES) if args.only is None else [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        ap.error(f"--only: unknown benchmark(s) {unknown}; expected from {', '.join(BENCHES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = f"{device_line(args.device)}; start {load_average()}"
    print(header, flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-json-") as tmp:
        for name in names:
            full, quick, has_json = BENCHES[name]
            row = run_one(name, quick if args.quick else full, args.device,
                          Path(tmp) / f"{name}.json" if has_json else None, args.timeout)
            rows.append(row)
            print(f"{name}: {row['status']} in {row['wall_s']:.0f} s", flush=True)
    footer = f"end {load_average()}"
    summary = {"device": args.device, "quick": args.quick, "header": header, "footer": footer, "benches": rows,
               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    md = f"# Benchmarks ({'quick' if args.quick else 'short'} run)\n\n{header}\n\n{table(rows)}\n{footer}\n"
    (out / "results.md").write_text(md)
    print("\n" + md)
    return 0 if all(r["status"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
