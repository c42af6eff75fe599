"""What a monitoring check shows: a console table, and an HTML report with plots."""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

from tabflow.monitoring.drift import DriftResult, FeatureDrift
from tabflow.monitoring.profile import Profile, format_value

MAX_PLOTS = 40  # features plotted in the report: the drifted first, then by statistic
TOP_CATEGORIES = 12


def _stat(f: FeatureDrift) -> str:
    return f"p={f.p_value:.3g}" if f.p_value is not None else f"{f.statistic:.3f}"


def _flag(f: FeatureDrift) -> str:
    return "SEVERE" if f.severe else "yes" if f.drifted else "no"


def console_table(result: DriftResult, limit: int = 12) -> str:
    """Feature, test, statistic, PSI, drifted: the drifted first, at most ``limit`` rows."""
    rows = sorted(result.features, key=lambda f: (not f.severe, not f.drifted, -f.psi))
    width = max([len(f.feature) for f in rows[:limit]] + [7])
    lines = [f"  {'feature':<{width}}  {'test':<18}  {'statistic':>10}  {'psi':>6}  drifted"]
    for f in rows[:limit]:
        why = f"  ({'; '.join(f.reasons)})" if f.reasons else ""
        lines.append(f"  {f.feature:<{width}}  {f.test:<18}  {_stat(f):>10}  {f.psi:>6.3f}  "
                     f"{_flag(f)}{why}")
    if len(rows) > limit:
        lines.append(f"  ... {len(rows) - limit} more feature(s), none drifted"
                     if not any(f.drifted for f in rows[limit:]) else
                     f"  ... {len(rows) - limit} more feature(s) (see report.html)")
    return "\n".join(lines)


W, H, PAD = 330, 190, 28  # one feature's plot, in pixels
COLOURS = {"training": "#4c72b0", "new": "#dd8452"}


def _shares(profile: Profile, f: FeatureDrift, new: pd.Series
            ) -> tuple[list[str], dict[str, np.ndarray]]:
    """Bin labels and each side's share of rows per bin (numeric) or category."""
    spec = profile.features[f.feature]
    if f.kind == "numeric" and "frequencies" not in spec:
        ref = profile.sample[f.feature].dropna().to_numpy(dtype=float)
        cur = new.dropna().to_numpy(dtype=float)
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins=20)
        shares = {k: np.histogram(v, edges)[0] / max(v.size, 1)
                  for k, v in (("training", ref), ("new", cur))}
        return [f"{edges[0]:.3g}", f"{edges[-1]:.3g}"], shares
    train = pd.Series(spec.get("frequencies", {}), dtype=float)
    current = new.dropna().map(format_value).value_counts().astype(float)
    table = pd.DataFrame({"training": train / max(train.sum(), 1),
                          "new": current / max(current.sum(), 1)}).fillna(0.0)
    table = table.sort_values(["training", "new"], ascending=False).head(TOP_CATEGORIES)
    return [str(i) for i in table.index], {k: table[k].to_numpy() for k in COLOURS}


def feature_svg(f: FeatureDrift, profile: Profile, new: pd.Series) -> str:
    """Training against new for one feature, as a small inline SVG bar chart.

    Histograms over common bins for numeric features, side-by-side shares of the most
    frequent categories for categorical ones. Drawn by hand: matplotlib takes ~0.25 s a
    plot, which made the report the slowest step of a check.
    """
    labels, shares = _shares(profile, f, new)
    top = max(max(float(v.max()) for v in shares.values() if v.size), 1e-9)
    n = max(len(next(iter(shares.values()))), 1)
    numeric = len(labels) == 2 and n > 2
    slot = (W - 2 * PAD) / n
    bars = []
    for i, (side, values) in enumerate(shares.items()):
        width = slot * (0.95 if numeric else 0.45)
        for j, v in enumerate(values):
            x = PAD + j * slot + (0 if numeric else i * width)
            h = (H - 2 * PAD) * float(v) / top
            bars.append(f'<rect x="{x:.1f}" y="{H - PAD - h:.1f}" width="{width:.1f}" '
                        f'height="{h:.1f}" fill="{COLOURS[side]}" fill-opacity="0.6"/>')
    if numeric:
        ticks = (f'<text x="{PAD}" y="{H - 12}" font-size="10">{html.escape(labels[0])}</text>'
                 f'<text x="{W - PAD}" y="{H - 12}" font-size="10" text-anchor="end">'
                 f'{html.escape(labels[1])}</text>')
    else:
        ticks = "".join(f'<text x="{PAD + (j + 0.5) * slot:.1f}" y="{H - 14}" font-size="9" '
                        f'text-anchor="middle">{html.escape(label[:8])}</text>'
                        for j, label in enumerate(labels))
    legend = "".join(f'<rect x="{W - 95}" y="{8 + 13 * i}" width="9" height="9" '
                     f'fill="{c}"/><text x="{W - 82}" y="{16 + 13 * i}" font-size="10">{k}</text>'
                     for i, (k, c) in enumerate(COLOURS.items()))
    title = html.escape(f.feature + (" (drifted)" if f.drifted else ""))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
            f'role="img"><title>{title}</title><text x="{PAD}" y="16" font-size="12" '
            f'font-weight="bold">{title}</text>{"".join(bars)}<line x1="{PAD}" '
            f'y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#555"/>{ticks}{legend}</svg>')


def _table(header: list[str] | None, rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header or [])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def write_html(title: str, summary: dict[str, Any], result: DriftResult,
               performance: list[list[Any]], profile: Profile, X: pd.DataFrame) -> str:
    """A self-contained HTML page: summary, performance, drift table, per-feature plots."""
    ranked = sorted(result.features, key=lambda f: (not f.severe, not f.drifted, -f.psi))
    drift_rows = [[f.feature, f.kind, f.test, _stat(f), f"{f.psi:.3f}",
                   f"{f.missing_train:.1%} -> {f.missing_new:.1%}",
                   _flag(f), "; ".join(f.reasons)] for f in ranked]
    figures = "".join(f"<figure>{feature_svg(f, profile, X[f.feature])}</figure>"
                      for f in ranked[:MAX_PLOTS])
    perf = (_table(["metric", "baseline (test)", "new", "change"], performance)
            if performance else "<p>No labels given: performance not scored.</p>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}
</title><style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}
table{{border-collapse:collapse;margin-bottom:1.5em}}th,td{{border:1px solid #ccc;
padding:3px 8px;text-align:left;font-size:13px}}figure{{display:inline-block;margin:0}}
</style></head><body><h1>{html.escape(title)}</h1>
{_table(None, [[k, v] for k, v in summary.items()])}
<h2>Performance against the baseline</h2>{perf}
<h2>Data drift per feature</h2>
{_table(["feature", "kind", "test", "statistic", "psi", "missing", "drifted", "why"],
        drift_rows)}
<h2>Training against new</h2>{figures}</body></html>"""
