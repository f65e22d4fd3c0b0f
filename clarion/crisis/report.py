"""The post-incident report as Markdown, ready to paste into an incident review."""

from __future__ import annotations

from typing import Any


def _secs(value: float | None) -> str:
    if value is None:
        return "not reached"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def to_markdown(report: dict[str, Any]) -> str:
    r = report
    lines = [
        f"# Incident {r['incident_id']}: {r['title']}",
        "",
        f"- Broadcast `{r['broadcast_id']}`, severity **{r['severity']}**, status {r['status']}",
        f"- Created {r['created_at']}, launched {r['launched_at'] or '-'}, "
        f"ended {r['ended_at'] or '-'}",
        f"- Audience: {', '.join(f'{k} {v}' for k, v in r['audience'].items() if v) or '-'}",
        f"- Recipients: {r['recipients']} ("
        + ", ".join(f"{k} {v}" for k, v in sorted(r["by_status"].items()))
        + ")",
        f"- Acknowledged: {r['acknowledged']} ({_pct(r['acknowledged_share'])}), median "
        f"{_secs(r['median_ack_after_s']) if r['median_ack_after_s'] is not None else '-'} "
        f"after the message; escalated to a call: {r['escalated']}",
        "",
        "## Time to notify, by tier",
        "",
        "| tier | recipients | sent | failed | suppressed | fully notified after launch "
        "| acknowledged | escalated |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in r["tiers"]:
        s = t["by_status"]
        lines.append(
            f"| {t['tier']} | {t['recipients']} | {s.get('sent', 0)} | {s.get('failed', 0)} | "
            f"{s.get('suppressed', 0)} | {_secs(t['fully_notified_after_s'])} | "
            f"{t['acknowledged']} | {t['escalated']} |"
        )
    lines += ["", "## Channels", "", "| channel | attempts | sent | failed | delivery rate |"]
    lines.append("|---|---:|---:|---:|---:|")
    for channel, c in r["channels"].items():
        lines.append(
            f"| {channel} | {c['attempts']} | {c['sent']} | {c['failed']} | "
            f"{_pct(c['delivery_rate'])} |"
        )
    lines += [
        "",
        "## Messages",
        "",
        "| generation | kind | template | sent after launch | reached |",
    ]
    lines.append("|---:|---|---|---:|---:|")
    for u in r["updates"]:
        lines.append(
            f"| {u['generation']} | {u['kind']} | {u['template']} v{u['version']} | "
            f"{_secs(u['after_s'])} | {u['reached']} |"
        )
    for title, key in (("Suppressed", "suppressed_by_reason"), ("Failed", "failed_by_reason")):
        lines += ["", f"## {title} recipients, by reason", ""]
        items = r[key]
        lines += [f"- {count} x {reason}" for reason, count in items.items()] or ["- none"]
    if r.get("incident"):
        a = r["incident"]
        lines += [
            "",
            "## Alert",
            "",
            f"- Opened by alert `{a['key']}` from {a['source']} ({a['alerts']} alerts, "
            f"{a['flaps']} flaps), first at {a['first_alert_at']}",
            f"- Confirmed after {_secs(a['alert_to_confirmed_s'])}; launched "
            f"{_secs(a['confirmed_to_launch_s'])} after confirmation, "
            f"{_secs(a['alert_to_launch_s'])} after the first alert",
        ]
    lines += ["", "## Approvals", ""]
    if not r["approvals"]:
        lines.append("- none: the template was pre-approved")
    for a in r["approvals"]:
        who = ", ".join(
            f"{d['operator']} {'approved' if d['approved'] else 'rejected'}"
            + (f" ({d['reason']})" if d["reason"] else "")
            for d in a["decisions"]
        )
        lines.append(
            f"- `{a['request']}` ({a['category']}), asked by {a['requested_by']}: {a['status']}"
            f" after {_secs(a['waited_s']) if a['waited_s'] is not None else '-'}"
            + (f"; {who}" if who else "")
        )
    return "\n".join(lines) + "\n"
