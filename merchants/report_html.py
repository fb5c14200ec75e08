"""The campaign report as one standalone, printable HTML page with inline SVG charts.

No scripts and no outside resources: the page opens from a file, prints cleanly and can be
archived with the campaign's records.
"""

from __future__ import annotations

from html import escape

from merchants.reports import CampaignReport, SpendRow


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100:,}.{fen % 100:02d}"


def _bars(title: str, rows: list[SpendRow], width: int = 640) -> str:
    if not rows:
        return f"<h3>{escape(title)}</h3><p class=muted>no spending yet</p>"
    bar_h, gap, label_w = 18, 6, 110
    top = max(max(r.spent_fen for r in rows), 1)
    height = len(rows) * (bar_h + gap)
    parts = [f'<svg role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">']
    for i, row in enumerate(rows):
        y = i * (bar_h + gap)
        full = (width - label_w - 150) * max(row.spent_fen, 0) / top
        matched = (width - label_w - 150) * max(row.matched_fen, 0) / top
        parts.append(f'<text x="0" y="{y + 13}" class="label">{escape(row.key)}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{full:.1f}" height="{bar_h}" class="pending"/>'
                     f'<rect x="{label_w}" y="{y}" width="{matched:.1f}" height="{bar_h}" class="matched"/>'
                     f'<text x="{label_w + full + 6:.1f}" y="{y + 13}" class="value">'
                     f'{yuan(row.spent_fen)} ({row.payments:,})</text>')
    parts.append("</svg>")
    return f"<h3>{escape(title)}</h3>" + "".join(parts)


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #1b1b1b; }
h1 { font-size: 1.5rem; margin-bottom: 0; } .muted { color: #666; }
table { border-collapse: collapse; margin: .5rem 0 1.5rem; } td, th { padding: .25rem .75rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } tr + tr td { border-top: 1px solid #ddd; }
.matched { fill: #2f6f4f; } .pending { fill: #b7d3c3; } .label, .value { font-size: 12px; fill: #333; }
.legend span { display: inline-block; width: .8rem; height: .8rem; margin: 0 .3rem 0 1rem; vertical-align: middle; }
.bad { color: #a4262c; font-weight: 600; }
@media print { body { margin: 0; max-width: none; } h2 { break-after: avoid; } svg, table { break-inside: avoid; } }
"""


def render(report: CampaignReport) -> str:
    m = report.money
    money_rows = [("Budget", m.budget_fen), ("Issued to wallets", m.issued_fen),
                  ("Redeemed (reconciled with the banks)", m.redeemed_fen),
                  ("Notified, not yet reconciled", m.pending_fen), ("Reclaimed at expiry", m.reclaimed_fen),
                  ("Outstanding (issued, not redeemed or reclaimed)", m.outstanding_fen),
                  ("Cancelled (never claimed)", m.cancelled_fen), ("Allocated, not yet issued", m.allocated_fen)]
    open_breaks = sum(b.open for b in report.breaks)
    multiplier = (f"{report.consumption_multiplier:.2f}x: {yuan(report.basket_fen)} yuan of baskets for "
                  f"{yuan(report.basket_subsidy_fen)} yuan of packets"
                  if report.consumption_multiplier is not None else "no merchant reported basket totals")
    html = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>Campaign report {escape(report.campaign_id)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(report.name)}</h1>",
        f"<p class=muted>campaign {escape(report.campaign_id)} &middot; state {escape(report.state)} &middot; "
        f"generated {report.generated_at.isoformat(timespec='seconds')}</p>",
        "<h2>Money (yuan)</h2><table>",
        *[f"<tr><td>{escape(name)}</td><td>{yuan(fen)}</td></tr>" for name, fen in money_rows],
        "</table>",
        f"<p>Consumption multiplier: <strong>{escape(multiplier)}</strong></p>",
        "<h2>Reconciliation breaks</h2><table><tr><th>class</th><th>open</th><th>open (yuan)</th>"
        "<th>resolved</th></tr>",
        *[f"<tr><td>{escape(b.break_class)}</td><td{' class=bad' if b.open else ''}>{b.open:,}</td>"
          f"<td>{yuan(b.open_fen)}</td><td>{b.resolved:,}</td></tr>" for b in report.breaks],
        "</table>",
        f"<p>{open_breaks:,} open break(s).</p>" if open_breaks else "<p>No open breaks.</p>",
        "<h2>Spending</h2><p class=legend><span class=matched style='background:#2f6f4f'></span>reconciled"
        "<span style='background:#b7d3c3'></span>notified, net of refunds (payments in brackets)</p>",
        _bars("By day (UTC+8)", report.spend_by_day),
        _bars("By district", report.spend_by_district),
        _bars("By merchant category (MCC)", report.spend_by_category),
        "<h2>Packets</h2><table>",
        *[f"<tr><td>{escape(state)}</td><td>{n:,}</td></tr>" for state, n in sorted(report.packets.items())],
        "</table></body></html>",
    ]
    return "\n".join(html)
