"""deead_eval's report page: one self-contained index.html (figures inline as PNG) that any browser opens.

The page is what a planner engineer reads after an offline run: the sweep table, the evaluation plots,
where the chain exits (histogram per setting, coloured by layer as in the debug image), where the time
goes, the frames whose plans missed the ground truth most (their debug images), and the settings of the
run. Nothing is fetched: the page can be mailed or archived as it is.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deead_ros.debug_view import layer_rgb

Row = dict[str, Any]                        # one frame under one setting (frames.csv)
Summary = dict[str, dict[str, float]]       # {setting: {figure: value}} (summary.json)

# (summary key, column title, format): the sweep table, printed by deead_eval and shown on the page
TABLE_COLUMNS = (("mean_exit_layer", "exit layer", ".1f"), ("layer_sparsity", "sparsity", ".1%"),
                 ("checks_per_frame", "checks", ".2f"), ("latency_p50_ms", "p50 ms", ".2f"),
                 ("latency_p95_ms", "p95 ms", ".2f"), ("latency_ratio_vs_full", "vs full", ".2f"),
                 ("l2_1s_m", "L2 1s", ".3f"), ("l2_2s_m", "L2 2s", ".3f"), ("l2_3s_m", "L2 3s", ".3f"))


@dataclass(frozen=True, slots=True)
class WorstFrame:
    """A frame whose published plan missed the ground truth by much, with its debug image."""

    bag: str
    frame: int                # index within the bag
    l2_3s_m: float            # L2 at 3 s of the published plan to the ground truth
    png: bytes                # the debug image
    caption: str              # exit layer, reason


def _figure_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def exit_layer_figure(rows: list[Row], settings: list[str]) -> bytes:
    """PNG: frames per exit layer, one panel per setting, bars coloured by layer like the debug image."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    num_layers = rows[0]["num_layers"]
    layers = np.arange(1, num_layers + 1)
    colors = [tuple(c / 255 for c in layer_rgb(int(layer), num_layers)) for layer in layers]
    fig, axes = plt.subplots(1, len(settings), figsize=(3.2 * len(settings), 2.8), sharey=True, squeeze=False)
    for ax, setting in zip(axes[0], settings):
        exits = np.array([r["exit_layer"] for r in rows if r["setting"] == setting])
        ax.bar(layers, [(exits == layer).sum() for layer in layers], color=colors, width=0.9)
        ax.set(title=f"{setting}: mean {exits.mean():.1f}", xlabel="exit layer", xlim=(0.5, num_layers + 0.5))
    axes[0][0].set_ylabel("frames")
    fig.tight_layout()
    return _figure_png(fig)


def latency_figure(rows: list[Row], settings: list[str]) -> bytes:
    """PNG: the distribution of the runner's time per frame, and where it goes (stem, layers, checks)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (cdf, parts) = plt.subplots(1, 2, figsize=(11, 3.4))
    bottoms = np.zeros(len(settings))
    for setting in settings:
        total = np.sort([r["total_ms"] for r in rows if r["setting"] == setting])
        cdf.plot(total, np.arange(1, len(total) + 1) / len(total), label=setting)
    for key, color in (("stem_ms", "tab:gray"), ("layers_ms", "tab:blue"), ("checks_ms", "tab:orange")):
        means = np.array([np.mean([r[key] for r in rows if r["setting"] == s]) for s in settings])
        parts.bar(settings, means, bottom=bottoms, color=color, label=key.removesuffix("_ms"))
        bottoms += means
    cdf.set(title="latency per frame (runner)", xlabel="ms", ylabel="share of frames")
    parts.set(title="mean time per frame", ylabel="ms")
    cdf.legend()
    parts.legend()
    fig.tight_layout()
    return _figure_png(fig)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(summary: Summary) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in TABLE_COLUMNS)
    body = "".join(f"<tr><th>{html.escape(setting)}</th>"
                   + "".join(f"<td>{values[key]:{fmt}}</td>" for key, _, fmt in TABLE_COLUMNS) + "</tr>"
                   for setting, values in summary.items())
    return f"<table><tr><th>setting</th>{head}</tr>{body}</table>"


_STYLE = """body{font-family:sans-serif;margin:24px;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #ddd}
.frames{display:flex;flex-wrap:wrap;gap:12px}.frames figure{margin:0;width:calc(50% - 6px);max-width:640px}
figcaption{font-size:13px;color:#444}code{background:#f3f3f3;padding:1px 4px}"""


def write_page(out: Path, rows: list[Row], summary: Summary, worst: list[WorstFrame],
               run_settings: dict[str, str], eval_png: bytes) -> Path:
    """Write out/index.html and return its path.

    Args:
        rows, summary: deead_eval's per-frame rows and per-setting summary.
        worst: the frames to show with their debug images, worst first.
        run_settings: {name: value} of the run (command, model, exit and prior settings, ...).
        eval_png: the evaluation's overview plot (eval.png).
    """
    settings = list(summary)
    shown = run_settings.get("setting shown", "")
    bags = len({r.get("bag", "") for r in rows})
    frames = "".join(
        f"<figure>{_img(w.png, f'frame {w.frame}')}<figcaption>{html.escape(w.bag)} frame {w.frame}: "
        f"L2 at 3 s {w.l2_3s_m:.2f} m; {html.escape(w.caption)}</figcaption></figure>" for w in worst)
    settings_rows = "".join(f"<tr><th>{html.escape(k)}</th><td style='text-align:left'><code>{html.escape(v)}</code>"
                            f"</td></tr>" for k, v in run_settings.items())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>deead_eval report</title><style>{_STYLE}</style></head>
<body>
<h1>deead_eval: early exit over {bags} bag(s), {summary[settings[0]]['frames']} frames</h1>
<h2>Sweep</h2>
<p>Per setting: mean exit layer, layer sparsity, checks per frame, the runner's latency and its ratio to full
depth, and the L2 of the published plan to the ground truth (mean over the waypoints up to 1, 2, 3 s).</p>
{_table(summary)}
<h2>Evaluation plots</h2>
{_img(eval_png, "exit layers, deviations at the checkpoints, latency per frame")}
<h2>Exit layers</h2>
{_img(exit_layer_figure(rows, settings), "frames per exit layer")}
<h2>Latency</h2>
{_img(latency_figure(rows, settings), "latency distribution and breakdown")}
<h2>Worst frames by L2 ({html.escape(shown)})</h2>
<p>The camera with the bird's-eye inset: route prior (white), the trajectory at each checkpoint (viridis by layer),
the published plan (orange; red when a fallback), the ground truth (magenta).</p>
<div class="frames">{frames or "<p>No frame has a ground truth (or --worst-frames 0).</p>"}</div>
<h2>Settings of the run</h2>
<table>{settings_rows}</table>
</body></html>
"""
    path = out / "index.html"
    path.write_text(page)
    return path
