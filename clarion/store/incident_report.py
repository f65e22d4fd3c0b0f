"""The post-incident report of a crisis broadcast, from the store alone (it outlives the
workflow's history): timing per tier, channels, acknowledgements and escalations,
follow-up messages, suppressed recipients by reason, and the approvals involved."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.errors import NotFound
from clarion.store.incidents import incident_for_broadcast
from clarion.store.tables import (
    ApprovalDecisionRecord,
    ApprovalRequest,
    AuditEvent,
    Broadcast,
    BroadcastMessage,
    BroadcastRecipient,
)


def _after(at: datetime | None, start: datetime | None) -> float | None:
    if at is None or start is None:
        return None
    return round((at - start).total_seconds(), 3)


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


async def incident_report(session: AsyncSession, *, broadcast_id: str) -> dict[str, Any]:
    broadcast = await session.get(Broadcast, broadcast_id)
    if broadcast is None:
        raise NotFound("broadcast", broadcast_id)
    launched = broadcast.launched_at or broadcast.created_at
    tier_names = [
        t.get("name", f"tier {i + 1}") for i, t in enumerate(broadcast.audience.get("tiers", []))
    ]

    rows = (
        await session.execute(
            select(
                BroadcastRecipient.tier,
                BroadcastRecipient.status,
                BroadcastRecipient.channel,
                BroadcastRecipient.reason,
                BroadcastRecipient.sent_at,
                BroadcastRecipient.acked_at,
                BroadcastRecipient.escalated_at,
                BroadcastRecipient.gen_sent,
            ).where(BroadcastRecipient.broadcast_id == broadcast_id)
        )
    ).all()
    tiers: dict[int, dict[str, Any]] = {}
    suppressed: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    ack_delays: list[float] = []
    reached_by_gen: Counter[int] = Counter()
    for tier, status, channel, reason, sent_at, acked_at, escalated_at, gen_sent in rows:
        t = tiers.setdefault(
            tier,
            {
                "tier": tier_names[tier] if tier < len(tier_names) else f"tier {tier + 1}",
                "recipients": 0,
                "by_status": Counter(),
                "by_channel": Counter(),
                "last_sent_at": None,
                "acknowledged": 0,
                "escalated": 0,
            },
        )
        t["recipients"] += 1
        t["by_status"][status] += 1
        if channel:
            t["by_channel"][channel] += 1
        if sent_at is not None and (t["last_sent_at"] is None or sent_at > t["last_sent_at"]):
            t["last_sent_at"] = sent_at
        if acked_at is not None:
            t["acknowledged"] += 1
            if sent_at is not None:
                ack_delays.append((acked_at - sent_at).total_seconds())
        if escalated_at is not None:
            t["escalated"] += 1
        if status == "suppressed":
            suppressed[reason or "(no reason)"] += 1
        if status == "failed":
            failed[reason or "(no reason)"] += 1
        if status == "sent":
            for gen in range(1, (gen_sent or 0) + 1):
                reached_by_gen[gen] += 1
    tier_report = []
    for index in sorted(tiers):
        t = tiers[index]
        pending = t["by_status"].get("pending", 0) + t["by_status"].get("sending", 0)
        tier_report.append(
            {
                "tier": t["tier"],
                "recipients": t["recipients"],
                "by_status": dict(t["by_status"]),
                "by_channel": dict(t["by_channel"]),
                "fully_notified_after_s": None if pending else _after(t["last_sent_at"], launched),
                "acknowledged": t["acknowledged"],
                "escalated": t["escalated"],
            }
        )

    prefix = f"crisis-{broadcast_id}-g"
    attempts = (
        await session.execute(
            select(AuditEvent.channel, AuditEvent.kind, func.count())
            .where(
                AuditEvent.message_id.like(
                    prefix.replace("%", r"\%").replace("_", r"\_") + "%", escape="\\"
                ),
                AuditEvent.kind.in_(["sent", "failed"]),
                AuditEvent.channel.is_not(None),
            )
            .group_by(AuditEvent.channel, AuditEvent.kind)
        )
    ).all()
    channels: dict[str, dict[str, Any]] = defaultdict(lambda: {"sent": 0, "failed": 0})
    for channel, kind, count in attempts:
        channels[str(channel)][kind] += int(count)
    for figures in channels.values():
        tried = figures["sent"] + figures["failed"]
        figures["attempts"] = tried
        figures["delivery_rate"] = round(figures["sent"] / tried, 4) if tried else None
        figures["failure_rate"] = round(figures["failed"] / tried, 4) if tried else None

    messages = (
        await session.execute(
            select(BroadcastMessage)
            .where(BroadcastMessage.broadcast_id == broadcast_id)
            .order_by(BroadcastMessage.gen)
        )
    ).scalars()
    updates = [
        {
            "generation": m.gen,
            "kind": m.kind,
            "template": m.template,
            "version": m.template_version,
            "at": m.created_at.isoformat(),
            "after_s": _after(m.created_at, launched),
            "reached": reached_by_gen.get(m.gen, 0),
        }
        for m in messages
    ]

    alert = await incident_for_broadcast(session, broadcast_id)
    subjects = [
        and_(
            ApprovalRequest.subject_kind == "broadcast", ApprovalRequest.subject_id == broadcast_id
        )
    ]
    if alert is not None:  # opened by alerts: the launch and resolution proposals too
        subjects.append(
            and_(
                ApprovalRequest.subject_kind == "incident",
                ApprovalRequest.subject_id == alert["incident_id"],
            )
        )
    requests = (
        await session.execute(
            select(ApprovalRequest).where(or_(*subjects)).order_by(ApprovalRequest.created_at)
        )
    ).scalars()
    approvals = []
    for request in requests:
        decisions = (
            await session.execute(
                select(ApprovalDecisionRecord)
                .where(ApprovalDecisionRecord.request_id == request.id)
                .order_by(ApprovalDecisionRecord.at)
            )
        ).scalars()
        approvals.append(
            {
                "request": request.id,
                "category": request.category,
                "requested_by": request.requested_by,
                "status": request.status,
                "requested_at": request.created_at.isoformat(),
                "decided_at": request.decided_at.isoformat() if request.decided_at else None,
                "waited_s": _after(request.decided_at, request.created_at),
                "decisions": [
                    {
                        "operator": d.operator,
                        "approved": d.approved,
                        "reason": d.reason,
                        "at": d.at.isoformat(),
                    }
                    for d in decisions
                ],
            }
        )

    total = len(rows)
    by_status: Counter[str] = Counter()
    for t in tier_report:
        by_status.update(t["by_status"])
    acknowledged = sum(t["acknowledged"] for t in tier_report)
    return {
        "broadcast_id": broadcast.id,
        "incident_id": broadcast.incident_id,
        "title": broadcast.title,
        "severity": broadcast.severity,
        "status": broadcast.status,
        "created_at": broadcast.created_at.isoformat(),
        "launched_at": broadcast.launched_at.isoformat() if broadcast.launched_at else None,
        "ended_at": broadcast.ended_at.isoformat() if broadcast.ended_at else None,
        "audience": {k: v for k, v in broadcast.audience.items() if k != "tiers"},
        "recipients": total,
        "by_status": dict(by_status),
        "tiers": tier_report,
        "channels": dict(sorted(channels.items())),
        "acknowledged": acknowledged,
        "acknowledged_share": round(acknowledged / total, 4) if total else None,
        "median_ack_after_s": _median(ack_delays),
        "escalated": sum(t["escalated"] for t in tier_report),
        "updates": updates,
        "suppressed_by_reason": dict(suppressed.most_common()),
        "failed_by_reason": dict(failed.most_common()),
        "approvals": approvals,
        "incident": None
        if alert is None
        else {
            k: (v.isoformat() if isinstance(v, datetime) else v)
            for k, v in alert.items()
            if k
            in (
                "incident_id",
                "key",
                "source",
                "type",
                "alerts",
                "flaps",
                "first_alert_at",
                "confirmed_at",
                "launched_at",
                "alert_to_confirmed_s",
                "confirmed_to_launch_s",
                "alert_to_launch_s",
            )
        },
    }
