"""Wide tables: a sweep's peak memory and time as the table widens, report included.

    python bench/wide.py                  # ~3 min; writes bench/results/wide.{json,txt}
    python bench/wide.py --widths 50 2000 # a quick look

For each width, a fresh project runs ``python src/train.py -m`` on a generated table of
``--rows`` rows (``dataset=synthetic``, float32 features), logreg, 2 trials, with the
report and its figures on (the permutation importance shuffles at most 50 columns, in
predict calls bounded in cells). The peak RSS of the process tree is sampled every 50 ms.
The target (issue 30): the 10,000-column sweep's peak grows over the 50-column one's by at
most 2x the data's own memory.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.overhead import _env, run_measured

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def sweep(width: int, rows: int) -> dict[str, Any]:
    """Run one sweep on a ``rows`` x ``width`` table; its wall time and peak memory."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cmd = [sys.executable, str(REPO / "src" / "train.py"), "-m", "dataset=synthetic",
               f"dataset.synthetic.n_rows={rows}", f"dataset.synthetic.n_features={width}",
               "dataset.synthetic.n_informative=5", "dataset.synthetic.n_categorical=0",
               "model=logreg", "sweep=narrow", "hydra.sweeper.n_trials=2", "cv.folds=0"]
        measured = run_measured(cmd, root, _env(root))
        assert "Registered synthetic version 1" in measured["output"], measured["output"][-2000:]
    data_mb = rows * width * 4 / 2**20
    return {"width": width, "rows": rows, "data_mb": data_mb, "wall_s": measured["wall_s"],
            "peak_rss_mb": measured["peak_rss_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[50, 2000, 10000])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS / "wide.json")
    args = parser.parse_args()
    results = [sweep(w, args.rows) for w in args.widths]
    base = results[0]
    lines = [f"Wide tables: a 2-trial logreg sweep with its report, {args.rows} rows "
             f"({platform.node()}, {platform.processor() or platform.machine()})",
             f"{'columns':>8} {'data MB':>8} {'wall s':>7} {'peak MB':>8} {'peak - narrow':>14}"
             f" {'/ data':>7}"]
    for r in results:
        extra = r["peak_rss_mb"] - base["peak_rss_mb"]
        r["peak_over_narrow_mb"] = extra
        r["ratio_to_data"] = extra / r["data_mb"] if r is not base else None
        lines.append(f"{r['width']:>8} {r['data_mb']:>8.1f} {r['wall_s']:>7.1f} "
                     f"{r['peak_rss_mb']:>8.0f} {extra:>14.0f} "
                     + (f"{r['ratio_to_data']:>7.2f}" if r is not base else f"{'':>7}"))
    widest = results[-1]
    target = widest["ratio_to_data"] is not None and widest["ratio_to_data"] <= 2.0
    lines.append(f"target: the {widest['width']}-column peak grows by at most 2x its data over "
                 f"the {base['width']}-column one: {'met' if target else 'NOT met'}")
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "target_met": target}, indent=1))
    args.out.with_suffix(".txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
