"""The evaluation's outputs: a self-contained HTML report (the paper's Table 1 layout, comparison
sheets inlined as data URIs, so the one file can be mailed or published), the sheets as PNGs,
the means as JSON and the per-image rows as CSV. Every file is written atomically.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from realsr_r1.atomic import write_bytes, write_json, write_text
from realsr_r1.data.images import encode_png
from realsr_r1.evaluate.benchmark import Result, format_value
from realsr_r1.evaluate.protocol import BY_NAME

PANEL = 256  # longest side of a sheet panel, px
LABEL_H = 22
CAPTION_LINES, CAPTION_LINE_H = 9, 13


def _panel(image: np.ndarray, label: str, height: int, width: int) -> Image.Image:
    """One labelled panel: the image resized to (width, height) (nearest, so pixels stay visible)."""
    pic = Image.fromarray(image).resize((width, height), Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (width, height + LABEL_H), "white")
    canvas.paste(pic, (0, LABEL_H))
    ImageDraw.Draw(canvas).text((4, 3), label, fill="black", font=ImageFont.load_default(size=14))
    return canvas


def _caption(text: str, width: int) -> Image.Image:
    """Text wrapped to `width` px under a panel (the model's degradation text and understanding)."""
    font = ImageFont.load_default(size=11)
    chars = max(8, width // 6)
    lines = [line for para in text.splitlines() for line in textwrap.wrap(para, chars) or [""]][:CAPTION_LINES]
    canvas = Image.new("RGB", (width, CAPTION_LINE_H * CAPTION_LINES + 4), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((4, 2 + i * CAPTION_LINE_H), line, fill="#333", font=font)
    return canvas


def comparison_sheet(
    panels: list[tuple[str, np.ndarray]],
    panel: int = PANEL,
    captions: dict[str, str] | None = None,
    second_row: list[tuple[str, np.ndarray]] | None = None,
) -> np.ndarray:
    """Side by side, each labelled: e.g. LR | bicubic | model | GT, all shown at one size; text
    under the panels `captions` names; `second_row` (e.g. the model's chain images) below."""
    h, w = panels[-1][1].shape[:2]
    f = panel / max(h, w)
    ph, pw = max(1, round(h * f)), max(1, round(w * f))
    gap = 4
    rows = [[_panel(image, label, ph, pw) for label, image in panels]]
    if captions:
        rows[0] = [_stack(p, _caption(captions[label], pw)) if label in captions else p for p, (label, _) in zip(rows[0], panels)]
    if second_row:
        rows.append([_panel(image, label, ph, pw) for label, image in second_row])
    width = max(len(r) for r in rows) * (pw + gap) - gap
    heights = [max(p.height for p in r) for r in rows]
    sheet = Image.new("RGB", (width, sum(heights) + gap * (len(rows) - 1)), "white")
    top = 0
    for r, height in zip(rows, heights, strict=True):
        for i, p in enumerate(r):
            sheet.paste(p, (i * (pw + gap), top))
        top += height + gap
    return np.asarray(sheet)


def _stack(top: Image.Image, bottom: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (top.width, top.height + bottom.height), "white")
    canvas.paste(top, (0, 0))
    canvas.paste(bottom, (0, top.height))
    return canvas


@dataclass(frozen=True)
class SheetSpec:
    """What a benchmark's sheets show: which methods, text under some of them, a second row per photo."""

    methods: list[str] | None = None  # None: every method of the result
    captions: dict[str, dict[str, str]] = field(default_factory=dict)  # method -> photo -> text
    second_rows: dict[str, list[tuple[str, np.ndarray]]] = field(default_factory=dict)  # photo -> panels
    limit: int | None = None  # at most this many sheets


def sheets(
    result: Result, lrs: dict[str, np.ndarray], hrs: dict[str, np.ndarray | None], spec: SheetSpec = SheetSpec()
) -> dict[str, np.ndarray]:
    """One sheet per photo scored by every shown method: LR | each method | GT (when there is one)."""
    methods = spec.methods or result.methods
    names = [n for n in lrs if all(n in result.outputs.get(m, {}) for m in methods)]
    if spec.limit is not None and len(names) > spec.limit:  # spread over the benchmark, not its first photo's crops
        names = [names[i * len(names) // spec.limit] for i in range(spec.limit)]
    out = {}
    for name in names:
        lr = lrs[name]
        panels = [("LR", lr), *((m, result.outputs[m][name]) for m in methods)]
        if hrs.get(name) is not None:
            panels.append(("GT", hrs[name]))
        captions = {m: texts[name] for m, texts in spec.captions.items() if name in texts}
        out[name] = comparison_sheet(panels, captions=captions, second_row=spec.second_rows.get(name))
    return out


def curve_png(title: str, x: list[float], series: dict[str, list[float]], xlabel: str = "step") -> np.ndarray:
    """A training curve as an RGB image (matplotlib, no display), for the self-contained report."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for label, ys in series.items():
        ax.plot(x, ys, label=label, linewidth=1.4)
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def _data_uri(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


def _best(result: Result, metric: str) -> float | None:
    values = [v for m in result.methods if (v := result.means[m].get(metric)) is not None]
    if not values:
        return None
    return max(values) if BY_NAME[metric].higher_better else min(values)


def table_html(result: Result) -> str:
    """Methods as rows, metrics as columns with their arrow, the best of each column in bold."""
    head = "".join(
        f'<th data-metric="{k}">{html.escape(BY_NAME[k].label)} {"&uarr;" if BY_NAME[k].higher_better else "&darr;"}</th>'
        for k in result.metrics
    )
    rows = []
    for method in result.methods:
        cells = []
        for k in result.metrics:
            v = result.means[method].get(k)
            if k in result.skipped:
                cells.append(f'<td class="skipped" title="{html.escape(result.skipped[k])}">skipped</td>')
            elif v is None:
                cells.append("<td>-</td>")
            else:
                text = format_value(k, v)
                best = len(result.methods) > 1 and format_value(k, _best(result, k)) == text
                cells.append(f"<td><b>{text}</b></td>" if best else f"<td>{text}</td>")
        rows.append(f'<tr data-method="{html.escape(method)}"><th>{html.escape(method)}</th>{"".join(cells)}</tr>')
    return f'<table id="metrics"><thead><tr><th>method</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def report_html(
    result: Result, sheet_images: dict[str, np.ndarray], title: str = "RealSR-R1 evaluation", curves: dict[str, np.ndarray] | None = None
) -> str:
    """The whole report as one HTML string: no external file, stylesheet or script."""
    skipped = "".join(f"<li><b>{html.escape(BY_NAME[k].label)}</b>: {html.escape(v)}</li>" for k, v in result.skipped.items())
    problems = "".join(f"<li>{html.escape(p)}</li>" for p in result.problems)
    figures = "".join(
        f'<figure><img alt="{html.escape(name)}" src="{_data_uri(img)}"><figcaption>{html.escape(name)}</figcaption></figure>'
        for name, img in sheet_images.items()
    )
    plots = "".join(
        f'<figure class="curve"><img alt="{html.escape(name)}" src="{_data_uri(img)}"><figcaption>{html.escape(name)}</figcaption></figure>'
        for name, img in (curves or {}).items()
    )
    kind = "paired (LR and HR)" if result.paired else "LR only: no-reference metrics"
    images = len({r["image"] for r in result.rows})
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border-bottom: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
thead th {{ border-bottom: 2px solid #333; }} tbody th {{ text-align: left; }}
td.skipped {{ color: #999; font-style: italic; }}
div.scroll {{ overflow-x: auto; }} thead th {{ white-space: nowrap; }}
figure {{ margin: 1em 0; }} img {{ image-rendering: pixelated; max-width: 100%; }}
figure.curve {{ display: inline-block; margin-right: 1em; }} figure.curve img {{ image-rendering: auto; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Benchmark <code>{html.escape(result.benchmark)}</code>, {kind}, {images} images. PSNR and SSIM on Y
(BT.601), {result.crop_border} px cropped at each edge. &uarr; higher is better, &darr; lower; best in bold.</p>
<div class="scroll">{table_html(result)}</div>
{f"<h2>Skipped metrics</h2><ul id='skipped'>{skipped}</ul>" if skipped else ""}
{f"<h2>Not scored</h2><ul id='problems'>{problems}</ul>" if problems else ""}
<h2>Comparison sheets</h2>
{figures}
{f"<h2>Training curves</h2>{plots}" if plots else ""}
</body></html>
"""


def write_report(
    result: Result,
    out: str | Path,
    lrs: dict[str, np.ndarray],
    hrs: dict[str, np.ndarray | None],
    spec: SheetSpec = SheetSpec(),
    curves: dict[str, np.ndarray] | None = None,
    title: str = "RealSR-R1 evaluation",
) -> list[Path]:
    """metrics.json, per_image.csv, sheets/<photo>.png and report.html under `out`; returns the paths."""
    out = Path(out)
    sheet_images = sheets(result, lrs, hrs, spec)
    written = [out / "metrics.json", out / "per_image.csv", out / "report.html"]
    write_json(written[0], result.as_dict())
    buf = io.StringIO()
    per_image = [k for k in result.metrics if not BY_NAME[k].per_set]
    writer = csv.writer(buf)
    writer.writerow(["method", "image", *per_image])
    for row in result.rows:  # skipped: "skipped"; not scored for this image: empty
        cells = ["skipped" if k in result.skipped else "" if row.get(k) is None else repr(row[k]) for k in per_image]
        writer.writerow([row["method"], row["image"], *cells])
    write_text(written[1], buf.getvalue())
    write_text(written[2], report_html(result, sheet_images, title, curves))
    for name, img in sheet_images.items():
        write_bytes(out / "sheets" / f"{name}.png", encode_png(img))
        written.append(out / "sheets" / f"{name}.png")
    return written
