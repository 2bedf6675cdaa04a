"""The report as one self-contained HTML file: a per-hour chart (inline SVG) of received,
rejected and sent, then the tables. No external assets: it opens from a mail attachment
or a file on an air-gapped laptop."""
from __future__ import annotations

import html
import os

SERIES = (("received", "#2b6cb0"), ("rejected", "#c53030"), ("sent", "#2f855a"))
W, H, PAD = 720, 240, 36


def chart(hourly: list[dict]) -> str:
    if not hourly:
        return "<p>No mail in this period.</p>"
    top = max(1, max(h[k] for h in hourly for k, _ in SERIES))
    n = len(hourly)
    slot = (W - 2 * PAD) / n
    bar = max(1.0, slot / (len(SERIES) + 1))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'viewBox="0 0 {W} {H}" role="img" aria-label="mail per hour">',
             f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#999"/>',
             f'<text x="4" y="{PAD}" font-size="11">{top}</text>']
    for i, h in enumerate(hourly):
        x0 = PAD + i * slot
        for j, (key, colour) in enumerate(SERIES):
            height = (H - 2 * PAD) * h[key] / top
            parts.append(f'<rect x="{x0 + j * bar:.1f}" y="{H - PAD - height:.1f}" '
                         f'width="{bar:.1f}" height="{height:.1f}" fill="{colour}">'
                         f'<title>{html.escape(h["hour"])} {key}: {h[key]}</title></rect>')
        if n <= 24 or i % max(1, n // 12) == 0:
            parts.append(f'<text x="{x0:.1f}" y="{H - PAD + 14}" font-size="10">'
                         f'{html.escape(h["hour"][11:13])}h</text>')
    for j, (key, colour) in enumerate(SERIES):
        parts.append(f'<rect x="{PAD + j * 110}" y="{H - 14}" width="10" height="10" '
                     f'fill="{colour}"/><text x="{PAD + j * 110 + 14}" y="{H - 5}" '
                     f'font-size="11">{key}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(title: str, rows: list[tuple]) -> str:
    if not rows:
        return ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<h2>{html.escape(title)}</h2><table>{body}</table>"


def render(rep: dict) -> str:
    c = rep["counts"]
    anomalies = "".join(f"<li><b>{html.escape(a['kind'])}</b>: {html.escape(a['detail'])}</li>"
                        for a in rep["anomalies"]) or "<li>none</li>"
    return "".join([
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>mail report</title>",
        "<style>body{font-family:sans-serif;margin:2em}td{padding:2px 10px;border-bottom:1px "
        "solid #ddd}.bad{color:#c53030}</style></head><body>",
        f"<h1>Mail report</h1><p>{html.escape(rep['since'])} .. {html.escape(rep['until'])}</p>",
        chart(rep["hourly"]),
        f"<h2 class='bad'>Anomalies</h2><ul>{anomalies}</ul>",
        _table("Counts", sorted(c.items())),
        _table("Rejected by reason", list(rep["rejected_by_reason"].items())),
        _table("Top rejected clients", [(x["client"], x["count"])
                                        for x in rep["top_rejected_clients"]]),
        _table("Failed AUTH by client", list(rep["auth_failed_by_client"].items())),
        _table("Outbound limit hits by user", list(rep["outbound_limited_by_user"].items())),
        "</body></html>\n"])


def write(path: str, rep: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(render(rep))
    os.replace(tmp, path)
