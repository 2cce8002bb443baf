"""Renderers for an ``edgeinfer bench`` report (schema ``edgeinfer.bench/1``).

:mod:`edgeinfer.bench` measures and returns one report dict; this module only turns that dict
into files and text, and never measures anything itself:

=================  ==========================================================================
writer             output
=================  ==========================================================================
format_table       fixed-width text for the terminal, one row per (model, backend), columns
                   named as OpenVINO ``benchmark_app`` / TFLite ``benchmark_model`` name them
write_json         the report itself (non-finite floats become ``null`` so that it is JSON)
write_csv          one flat row per result, columns :data:`CSV_COLUMNS`, latencies in ms
write_png          matplotlib box plot of ``samples_ms`` (needs the ``bench`` extra)
write_html         one self-contained page: manifest, settings, table, SVG box plot drawn
                   here, medians per model, per-layer profiles; no network, no scripts
=================  ==========================================================================

Latencies are shown in one unit per table or chart, chosen from the data (:func:`_latency_unit`):
``us`` when the fastest successful median is under 1 ms, ``s`` when it is 1000 ms or more, else
``ms``. CSV and JSON always keep milliseconds, as in the report. A result whose ``status`` is not
``"ok"`` carries a ``reason`` and null or absent numbers; every writer shows the status and reason
in place of the numbers. Every file is written atomically (:func:`_write_atomic`).

Strings in a report are user data (model paths, error reasons): the HTML escapes them, the text
table drops control characters (a path must not be able to send terminal escape sequences), and
the PNG escapes matplotlib's ``$`` math markup.
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
import os
from typing import Any, Iterable

import numpy as np

from ._files import write_atomic
from .errors import MissingDependencyError

SCHEMA = "edgeinfer.bench/1"

LATENCY_KEYS = ("min", "mean", "median", "std", "p90", "p95", "p99", "max")

CSV_COLUMNS = (
    "model", "backend", "status", "reason", "precision", "threads", "load_ms", "first_inference_ms", "count",
    *(f"latency_{k}_ms" for k in LATENCY_KEYS),
    "throughput_fps", "peak_rss_mb", "rss_delta_mb", "version", "batch", "max_abs_diff_vs_cpu",
)  # fmt: skip

# (header, result key, shown in ms); latency columns are added between them with the table's unit
_LEAD_COLUMNS = (("Backend", None), ("Precision", "precision"), ("Threads", "threads"),
                 ("Load (ms)", "load_ms"), ("First inference (ms)", "first_inference_ms"), ("Count", "count"))
_LATENCY_COLUMNS = (("Median", "median"), ("Average", "mean"), ("Min", "min"), ("Max", "max"),
                    ("P90", "p90"), ("P99", "p99"))
_TAIL_COLUMNS = (("Throughput (FPS)", "throughput_fps"), ("Peak RSS (MB)", "peak_rss_mb"),
                 ("RSS delta (MB)", "rss_delta_mb"))
_SPEEDUP_HEADER = "x fastest"
_LOG_SPREAD = 20.0  # a chart's y axis turns logarithmic when max/min sample exceeds this
_TOP_NODES = 15
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
            "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")  # matplotlib's tab10


# ----------------------------------------------------------------------------- reading the report
def _num(v: Any) -> float | None:
    """A finite float, or None for null, absent, non-numeric and NaN/inf values."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _is_ok(result: dict) -> bool:
    return result.get("status") == "ok"


def _latency(result: dict, key: str) -> float | None:
    return _num((result.get("latency_ms") or {}).get(key))


def _samples(result: dict) -> np.ndarray:
    """The finite timed runs of an ok result, in ms (empty when there are none)."""
    if not _is_ok(result):
        return np.empty(0)
    return np.asarray([v for v in result.get("samples_ms") or () if _num(v) is not None], np.float64)


def _model_name(result: dict) -> str:
    name = result.get("model_name") or os.path.basename(str(result.get("model") or "")) or "model"
    return str(name)


def _backend_label(result: dict) -> str:
    backend = str(result.get("backend") or "?")
    chosen = (result.get("auto") or {}).get("chosen")
    return f"{backend} ({chosen})" if chosen else backend


def _by_model(results: Iterable[dict]) -> list[tuple[str, list[dict]]]:
    """Results grouped by model path, models and backends in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(str(r.get("model") or _model_name(r)), []).append(r)
    return list(groups.items())


def _speedups(results: list[dict]) -> dict[int, float]:
    """id(result) -> median / the fastest ok median among ``results`` (one model's results)."""
    medians = {id(r): m for r in results if _is_ok(r) and (m := _latency(r, "median")) is not None and m > 0}
    if not medians:
        return {}
    fastest = min(medians.values())
    return {k: m / fastest for k, m in medians.items()}


def _latency_unit(results: Iterable[dict]) -> tuple[str, float]:
    """(unit name, factor from ms) for one table, from the fastest ok median (see module doc)."""
    medians = [m for r in results if _is_ok(r) and (m := _latency(r, "median")) is not None and m > 0]
    if not medians:
        return "ms", 1.0
    fastest = min(medians)
    if fastest < 1.0:
        return "us", 1e3
    if fastest >= 1e3:
        return "s", 1e-3
    return "ms", 1.0


def _fmt(v: Any) -> str:
    """A number with three or four significant digits; ``-`` when there is none."""
    x = _num(v)
    if x is None:
        return "-"
    if isinstance(v, int):
        return str(v)
    a = abs(x)
    return f"{x:.0f}" if a >= 1000 else f"{x:.1f}" if a >= 100 else f"{x:.2f}" if a >= 10 else f"{x:.3f}"


def _status_text(result: dict) -> str:
    status = str(result.get("status") or "unknown")
    reason = result.get("reason")
    return f"{status}: {reason}" if reason else status


def _columns(unit: str, speedup: bool) -> list[str]:
    return ([h for h, _ in _LEAD_COLUMNS] + [f"{h} ({unit})" for h, _ in _LATENCY_COLUMNS]
            + [h for h, _ in _TAIL_COLUMNS] + ([_SPEEDUP_HEADER] if speedup else []))


def _cells(result: dict, factor: float, ratio: float | None, speedup: bool) -> list[str]:
    """The table cells of an ok result, in :func:`_columns` order."""
    cells = [_backend_label(result)]
    for _, key in _LEAD_COLUMNS[1:]:
        v = result.get(key)
        cells.append(str(v) if isinstance(v, str) else _fmt(v))
    for _, key in _LATENCY_COLUMNS:
        x = _latency(result, key)
        cells.append(_fmt(None if x is None else x * factor))
    cells += [_fmt(result.get(key)) for _, key in _TAIL_COLUMNS]
    if speedup:
        cells.append("-" if ratio is None else f"{ratio:.2f}x")
    return cells


# ----------------------------------------------------------------------------- text table
def _terminal_safe(s: Any) -> str:
    """One line without control characters (C0, DEL, C1): user data must not drive the terminal."""
    text = "".join(c if c.isprintable() or c == " " else " " for c in str(s))
    return " ".join(text.split())


def format_table(report: dict) -> str:
    """The results as a fixed-width text table, one row per (model, backend), grouped by model.

    Latency columns share one unit chosen from the data (named in their headers). Rows whose
    status is not ``ok`` show ``status: reason`` after the backend, precision and threads. With
    several models, an ``x fastest`` column gives each median over the fastest ok backend's
    median of the same model.

    Args:
        report: an ``edgeinfer.bench/1`` report dict.

    Returns:
        The table, lines joined by newlines, without a trailing newline (``click.echo`` adds one).
    """
    results = list(report.get("results") or ())
    cpu = ((report.get("manifest") or {}).get("cpu") or {}).get("model")
    title = "edgeinfer bench" + (f" on {_terminal_safe(cpu)}" if cpu else "")
    if not results:
        return f"{title}: no results"
    unit, factor = _latency_unit(results)
    groups = _by_model(results)
    speedup = len(groups) > 1
    header = _columns(unit, speedup)
    body: list[tuple[str, list[tuple[bool, list[str]]]]] = []
    for model, rows in groups:
        ratios = _speedups(rows)
        lines = []
        for r in rows:
            if _is_ok(r):
                cells = _cells(r, factor, ratios.get(id(r)), speedup)
            else:
                cells = [_backend_label(r), str(r.get("precision") or "-"), _fmt(r.get("threads")), _status_text(r)]
            lines.append((_is_ok(r), [_terminal_safe(c) for c in cells]))
        body.append((f"{_terminal_safe(_model_name(rows[0]))}  ({_terminal_safe(model)})", lines))

    widths = [len(h) for h in header]
    for _, lines in body:
        for ok, cells in lines:
            for i, c in enumerate(cells if ok else cells[:3]):
                widths[i] = max(widths[i], len(c))

    def line(cells: list[str], ok: bool = True) -> str:
        # text columns (backend, precision) left-aligned, numbers right-aligned
        parts = [c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(cells[:3])]
        if ok:
            parts += [c.rjust(widths[i]) for i, c in enumerate(cells[3:], start=3)]
        else:
            parts.append(cells[3])
        return "  ".join(parts).rstrip()

    head = line(header)
    out = [title, head, "-" * len(head)]
    for heading, lines in body:
        out.append(f"model: {heading}")
        out += [line(cells, ok) for ok, cells in lines]
    return "\n".join(out)


# ----------------------------------------------------------------------------- files
def _write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """``data`` written atomically (:func:`edgeinfer._files.write_atomic`)."""
    write_atomic(path, lambda f: f.write(data))


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, np.generic):
        return _json_safe(v.item())
    return v


def write_json(report: dict, path: str | os.PathLike) -> None:
    """Write the report as indented UTF-8 JSON, atomically; NaN and infinities become ``null``."""
    text = json.dumps(_json_safe(report), indent=2, ensure_ascii=False, allow_nan=False)
    _write_atomic(path, (text + "\n").encode("utf-8"))


def _csv_value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return repr(v) if isinstance(v, float) else v  # repr: the shortest text that reads back exactly


def write_csv(report: dict, path: str | os.PathLike) -> None:
    """Write one row per result with the flat columns :data:`CSV_COLUMNS`, atomically.

    Latencies stay in ms as in the report; a null or absent number is an empty cell.
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in report.get("results") or ():
        row = {key: r.get(key) for key in CSV_COLUMNS if not key.startswith("latency_")}
        row.update({f"latency_{k}_ms": (r.get("latency_ms") or {}).get(k) for k in LATENCY_KEYS})
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    _write_atomic(path, buf.getvalue().encode("utf-8"))


# ----------------------------------------------------------------------------- PNG (matplotlib)
def _mpl_text(s: Any) -> str:
    return str(s).replace("$", r"\$")  # a '$...$' pair would otherwise be parsed as math


def _not_run_lines(results: list[dict], limit: int = 4) -> list[str]:
    lines = [f"{_model_name(r)} / {r.get('backend')}: {_terminal_safe(_status_text(r))}"
             for r in results if not _is_ok(r)]
    lines = [s if len(s) <= 110 else s[:107] + "..." for s in lines]
    return lines[:limit] + ([f"... and {len(lines) - limit} more not run"] if len(lines) > limit else [])


def write_png(report: dict, path: str | os.PathLike, *, dpi: int = 120) -> None:
    """Write a box plot of every ok result's ``samples_ms`` as a PNG, atomically.

    One box per (model, backend), colored by model when there are several; the y axis is
    logarithmic when the largest sample is more than 20x the smallest. The title names the CPU.

    Raises:
        MissingDependencyError: matplotlib is not installed.
    """
    try:
        # the object-oriented API with the Agg canvas: pyplot's global backend and figure list
        # stay untouched, so calling this from a notebook or a GUI program changes nothing there
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError as e:
        err = MissingDependencyError("matplotlib", "bench", "write_png (the PNG box plot)")
        # the extra brings the peers too; someone who only wants the chart needs one package
        err.msg = f"{err} (or only the plotting library: pip install matplotlib)"  # ImportError's str()
        err.args = (err.msg,)
        raise err from e

    results = list(report.get("results") or ())
    groups = _by_model(results)
    unit, factor = _latency_unit(results)
    data, positions, colors, labels, handles = [], [], [], [], []
    x = 0.0
    for g, (_, rows) in enumerate(groups):
        color = _PALETTE[g % len(_PALETTE)]
        boxes = [(r, s) for r in rows if (s := _samples(r)).size]
        for r, s in boxes:
            x += 1
            data.append(s * factor)
            positions.append(x)
            colors.append(color)
            labels.append(_mpl_text(_backend_label(r)))
        if boxes:
            handles.append(Patch(facecolor=color, alpha=0.6, label=_mpl_text(_model_name(rows[0]))))
            x += 0.6  # a gap between models

    notes = _not_run_lines(results)
    fig = Figure(figsize=(max(6.0, 0.9 * len(data) + 2.5), 4.8 + 0.2 * len(notes)), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cpu = ((report.get("manifest") or {}).get("cpu") or {}).get("model") or "unknown CPU"
    ax.set_title(_mpl_text(f"edgeinfer bench on {cpu}"), fontsize=10)
    if data:
        bp = ax.boxplot(data, positions=positions, widths=0.6, patch_artist=True,
                        flierprops={"markersize": 2, "alpha": 0.5})
        for box, color in zip(bp["boxes"], colors):
            box.set_facecolor(color)
            box.set_alpha(0.6)
        for median in bp["medians"]:
            median.set_color("black")
        ax.set_xticks(positions, labels, rotation=30 if len(data) > 6 else 0, ha="right" if len(data) > 6 else "center")
        everything = np.concatenate(data)
        low, high = everything.min(), everything.max()
        if low > 0 and high / low > _LOG_SPREAD:
            ax.set_yscale("log")
        if len(groups) > 1:
            ax.legend(handles=handles, fontsize=8, title="model", title_fontsize=8)
    else:
        ax.text(0.5, 0.5, "no successful results to plot", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
    ax.set_ylabel(f"latency per run ({unit})")
    ax.set_xlabel("backend")
    ax.grid(axis="y", alpha=0.3)
    if notes:
        fig.supxlabel(_mpl_text("not run: " + "\n".join(notes)), fontsize=7, ha="left", x=0.01)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _write_atomic(path, buf.getvalue())


# ----------------------------------------------------------------------------- HTML
_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:20px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:left}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{color:#a33;background:#fff6f6}tr.grp td{background:#eef3fa;font-weight:600}
td.bar{width:320px}td.bar span{display:block;height:12px;background:#4c78a8}
td.bar span.best{background:#2ca02c}code{font-size:12px}details{margin:6px 0}
svg text{font:11px system-ui,sans-serif}
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _kv_table(pairs: Iterable[tuple[Any, Any]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e('-' if v is None else v)}</td></tr>" for k, v in pairs)
    return f"<table>{rows}</table>"


def _html_manifest(report: dict) -> str:
    m = report.get("manifest") or {}
    cpu = m.get("cpu") or {}
    parts = ["<h2>Machine</h2>", _kv_table([
        ("CPU", cpu.get("model")), ("logical cores", cpu.get("logical_cores")),
        ("physical cores", cpu.get("physical_cores")), ("OS", m.get("os")),
        ("machine", m.get("machine")), ("Python", m.get("python")),
    ])]
    flags = cpu.get("flags") or []
    if flags:
        parts.append(f"<details><summary>CPU flags ({len(flags)})</summary>"
                     f"<code>{_e(' '.join(map(str, flags)))}</code></details>")
    libraries = m.get("libraries") or {}
    if libraries:
        versions = ((k, "not installed" if v is None else v) for k, v in libraries.items())
        parts.append("<h3>Libraries</h3>" + _kv_table(versions))
    for i, pool in enumerate(m.get("blas") or ()):
        parts.append(f"<h3>BLAS {i + 1}</h3>" + _kv_table((pool or {}).items()))
    env = m.get("env") or {}
    if env:
        parts.append("<h3>Environment</h3>" + _kv_table((k, "unset" if v is None else v) for k, v in env.items()))
    return "".join(parts)


def _html_results(results: list[dict], unit: str, factor: float) -> str:
    groups = _by_model(results)
    speedup = len(groups) > 1
    header = _columns(unit, speedup) + ["Max |diff| vs cpu"]
    out = ["<table><tr>", *(f"<th>{_e(h)}</th>" for h in header), "</tr>"]
    for model, rows in groups:
        out.append(f'<tr class="grp"><td colspan="{len(header)}">{_e(_model_name(rows[0]))} '
                   f"<small>({_e(model)})</small></td></tr>")
        ratios = _speedups(rows)
        for r in rows:
            if _is_ok(r):
                cells = _cells(r, factor, ratios.get(id(r)), speedup) + [_fmt(r.get("max_abs_diff_vs_cpu"))]
                out.append("<tr>" + "".join(f'<td{"" if i < 2 else " class=n"}>{_e(c)}</td>'
                                            for i, c in enumerate(cells)) + "</tr>")
            else:
                out.append(f'<tr class="bad"><td>{_e(_backend_label(r))}</td><td>{_e(r.get("precision") or "-")}</td>'
                           f'<td class=n>{_e(_fmt(r.get("threads")))}</td>'
                           f'<td colspan="{len(header) - 3}">{_e(_status_text(r))}</td></tr>')
    out.append("</table>")
    for r in results:
        auto = r.get("auto") or {}
        if auto.get("candidates"):
            out.append(f"<h3>auto for {_e(_model_name(r))}: chose {_e(auto.get('chosen') or 'nothing')}</h3><table>"
                       "<tr><th>backend</th><th>status</th><th>median (ms)</th><th>reason</th></tr>")
            for c in auto["candidates"]:
                out.append(f"<tr><td>{_e(c.get('backend'))}</td><td>{_e(c.get('status'))}</td>"
                           f"<td class=n>{_e(_fmt(c.get('median_ms')))}</td><td>{_e(c.get('reason') or '')}</td></tr>")
            out.append("</table>")
    return "".join(out)


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    if high <= low:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    n = math.ceil((high - first) / step - 1e-9)
    return [first + i * step for i in range(n + 1)]


def _svg_boxplot(results: list[dict], unit: str, factor: float) -> str:
    """An inline SVG box plot (Tukey whiskers at 1.5 IQR, outliers as dots) of the samples."""
    groups = _by_model(results)
    boxes = []  # (x index, color, result, samples in the unit)
    slot = 0.0
    for g, (_, rows) in enumerate(groups):
        present = [(r, s) for r in rows if (s := _samples(r)).size]
        for r, s in present:
            boxes.append((slot, _PALETTE[g % len(_PALETTE)], r, s * factor))
            slot += 1
        slot += 0.5 if present else 0
    if not boxes:
        return "<p>No successful results to plot.</p>"
    low = min(float(s.min()) for *_, s in boxes)
    high = max(float(s.max()) for *_, s in boxes)
    log = low > 0 and high / low > _LOG_SPREAD
    if log:
        # the data's own range padded by 5%, not whole decades (those can leave a decade empty);
        # ticks at 1, 2 and 5 times each power of ten inside, or at powers only when many decades
        pad = 0.05 * (math.log10(high) - math.log10(low))
        lo_t, hi_t = math.log10(low) - pad, math.log10(high) + pad
        steps = (1,) if hi_t - lo_t > 3 else (1, 2, 5)
        ticks = [m * 10.0**k for k in range(math.floor(lo_t), math.ceil(hi_t) + 1) for m in steps
                 if lo_t <= math.log10(m * 10.0**k) <= hi_t]
    else:
        ticks = _nice_ticks(low, high)
        lo_t, hi_t = ticks[0], ticks[-1]
    left, top, step, height = 70, 20, 60, 260
    width = left + int(slot * step) + 20
    svg_h = top + height + 60

    def y(v: float) -> float:
        t = math.log10(v) if log else v
        return top + (hi_t - t) / (hi_t - lo_t) * height

    out = [f'<svg width="{width}" height="{svg_h}" viewBox="0 0 {width} {svg_h}" role="img" '
           f'aria-label="latency box plot">']
    for t in ticks:
        ty = y(t)
        out.append(f'<line x1="{left}" x2="{width - 10}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#eee"/>'
                   f'<text x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end">{_e(f"{t:g}")}</text>')
    out.append(f'<text x="14" y="{top + height / 2}" transform="rotate(-90 14 {top + height / 2})" '
               f'text-anchor="middle">latency per run ({_e(unit)}){" (log)" if log else ""}</text>')
    for index, color, r, s in boxes:
        cx = left + index * step + step / 2
        q1, med, q3 = (float(v) for v in np.percentile(s, [25, 50, 75]))
        fence_lo, fence_hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
        inside = s[(s >= fence_lo) & (s <= fence_hi)]
        w_lo, w_hi = float(inside.min()), float(inside.max())
        tip = (f"{_model_name(r)} / {_backend_label(r)}: median {med:g} {unit}, IQR {q1:g}-{q3:g}, "
               f"range {float(s.min()):g}-{float(s.max()):g}, n={s.size}")
        out.append(f"<g><title>{_e(tip)}</title>"
                   f'<line x1="{cx}" x2="{cx}" y1="{y(w_hi):.1f}" y2="{y(w_lo):.1f}" stroke="#333"/>'
                   f'<rect x="{cx - 18}" y="{y(q3):.1f}" width="36" height="{max(y(q1) - y(q3), 1):.1f}" '
                   f'fill="{color}" fill-opacity="0.6" stroke="#333"/>'
                   f'<line x1="{cx - 18}" x2="{cx + 18}" y1="{y(med):.1f}" y2="{y(med):.1f}" '
                   'stroke="#000" stroke-width="2"/>')
        # one dot per pixel row: thousands of outliers would add bytes but nothing visible
        for oy in sorted({round(y(float(v)), 1) for v in s[(s < fence_lo) | (s > fence_hi)]}):
            out.append(f'<circle cx="{cx}" cy="{oy}" r="1.8" fill="none" stroke="{color}"/>')
        out.append(f'</g><text x="{cx}" y="{top + height + 16}" text-anchor="middle">{_e(_backend_label(r))}</text>')
    for g, (_, rows) in enumerate(groups):
        xs = [left + i * step + step / 2 for i, _, r, _ in boxes if any(r is x for x in rows)]
        if xs and len(groups) > 1:
            name = _model_name(rows[0])
            room = max(4, int((xs[-1] - xs[0] + step) / 6.5))  # ~6.5 px per character at 11px
            shown = name if len(name) <= room else name[: room - 1] + "\u2026"
            out.append(f'<text x="{(xs[0] + xs[-1]) / 2}" y="{top + height + 34}" text-anchor="middle" '
                       f'fill="{_PALETTE[g % len(_PALETTE)]}"><title>{_e(name)}</title>{_e(shown)}</text>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + height}" stroke="#999"/></svg>')
    return "".join(out)


def _bar_cell(fraction: float, best: bool = False) -> str:
    pct = 100.0 * min(max(fraction, 0.0), 1.0)
    return f'<td class="bar"><span{" class=best" if best else ""} style="width:{pct:.1f}%"></span></td>'


def _html_medians(results: list[dict], unit: str, factor: float) -> str:
    out = []
    for _, rows in _by_model(results):
        ratios = _speedups(rows)
        medians = [m for r in rows if id(r) in ratios and (m := _latency(r, "median")) is not None]
        out.append(f"<h3>{_e(_model_name(rows[0]))}</h3><table><tr><th>backend</th><th>median ({_e(unit)})</th>"
                   "<th></th><th>x fastest</th></tr>")
        for r in rows:
            if id(r) in ratios:
                m = _latency(r, "median")
                out.append(f"<tr><td>{_e(_backend_label(r))}</td><td class=n>{_e(_fmt(m * factor))}</td>"
                           f"{_bar_cell(m / max(medians), ratios[id(r)] == 1.0)}"
                           f"<td class=n>{ratios[id(r)]:.2f}x</td></tr>")
            else:
                text = "ok, but no median in the report" if _is_ok(r) else _status_text(r)
                out.append(f'<tr class="bad"><td>{_e(_backend_label(r))}</td><td colspan="3">{_e(text)}</td></tr>')
        out.append("</table>")
    return "".join(out)


def _html_profile(result: dict) -> str:
    profile = result.get("profile") or {}
    nodes = [n for n in profile.get("nodes") or () if isinstance(n, dict) and _num(n.get("total_ms")) is not None]
    op_types = [(k, v) for k, v in (profile.get("op_types") or {}).items()
                if isinstance(v, dict) and _num(v.get("total_ms")) is not None]
    # shares and bar lengths from the times themselves, so they agree whatever 'share' holds
    total = _num(profile.get("total_ms")) or sum(_num(v["total_ms"]) for _, v in op_types) \
        or sum(_num(n["total_ms"]) for n in nodes) or 1.0
    top = sorted(nodes, key=lambda n: -_num(n["total_ms"]))[:_TOP_NODES]
    out = [f"<h3>{_e(_model_name(result))} on {_e(_backend_label(result))}: {_e(_fmt(profile.get('runs')))} "
           f"profiled runs, {_e(_fmt(total))} ms in all</h3>",
           f"<h4>Top {len(top)} of {len(nodes)} nodes by time</h4><table><tr><th>node</th><th>op type</th>"
           "<th>calls</th><th>mean (ms)</th><th>total (ms)</th><th>share</th><th></th></tr>"]
    for n in top:
        t = _num(n["total_ms"])
        out.append(f"<tr><td>{_e(n.get('node'))}</td><td>{_e(n.get('op_type'))}</td>"
                   f"<td class=n>{_e(_fmt(n.get('calls')))}</td>"
                   f"<td class=n>{_e(_fmt(n.get('mean_ms')))}</td><td class=n>{_e(_fmt(t))}</td>"
                   f"<td class=n>{100 * t / total:.1f}%</td>{_bar_cell(t / total)}</tr>")
    out.append("</table><h4>Time per op type</h4><table><tr><th>op type</th><th>nodes</th><th>total (ms)</th>"
               "<th>share</th><th></th></tr>")
    for name, v in sorted(op_types, key=lambda kv: -_num(kv[1]["total_ms"])):
        t = _num(v["total_ms"])
        out.append(f"<tr><td>{_e(name)}</td><td class=n>{_e(_fmt(v.get('nodes')))}</td><td class=n>{_e(_fmt(t))}</td>"
                   f"<td class=n>{100 * t / total:.1f}%</td>{_bar_cell(t / total)}</tr>")
    out.append("</table>")
    return "".join(out)


def write_html(report: dict, path: str | os.PathLike) -> None:
    """Write the report as one self-contained HTML page, atomically.

    The page holds the machine manifest, the settings, the results table, an inline SVG box plot
    of the samples, a bar of medians per model and, for results that carry a ``profile``, the top
    15 nodes and the time per op type. It loads nothing: no scripts, no external CSS, fonts or
    images, and a Content-Security-Policy that forbids fetching any. Every string taken from the
    report is HTML-escaped.
    """
    results = list(report.get("results") or ())
    unit, factor = _latency_unit(results)
    settings = report.get("settings") or {}
    cpu = ((report.get("manifest") or {}).get("cpu") or {}).get("model")
    title = "edgeinfer bench" + (f" on {cpu}" if cpu else "")
    command = report.get("command")
    profiled = [r for r in results if r.get("profile")]
    page = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>{_e(report.get('schema') or SCHEMA)}, created {_e(report.get('created') or '-')}</p>",
        f"<p><code>{_e(' '.join(map(str, command)) if isinstance(command, list) else command or '')}</code></p>",
        _html_manifest(report),
        "<h2>Settings</h2>", _kv_table(settings.items()),
        "<h2>Results</h2>", _html_results(results, unit, factor),
        "<h2>Latency distribution</h2>", _svg_boxplot(results, unit, factor),
        "<h2>Median latency per model</h2>", _html_medians(results, unit, factor),
    ]
    if profiled:
        page += ["<h2>Per-layer profile</h2>", *(_html_profile(r) for r in profiled)]
    page.append("</body></html>\n")
    _write_atomic(path, "\n".join(page).encode("utf-8"))


__all__ = ["format_table", "write_json", "write_csv", "write_png", "write_html", "CSV_COLUMNS", "SCHEMA"]
