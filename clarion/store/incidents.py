"""Incidents opened by alerts, and the alerts themselves."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.errors import NotFound
from clarion.incidents import Alert, IncidentState
from clarion.store.tables import AlertRecord, IncidentRecord

_COPIED = (
    "key",
    "source",
    "type",
    "summary",
    "affects",
    "alerts",
    "flaps",
    "first_alert_at",
    "recovered_at",
    "confirmed_at",
    "proposed_at",
    "launched_at",
    "ended_at",
    "template",
    "segment",
    "audience_size",
    "broadcast_id",
    "reason",
)


async def record_alert(session: AsyncSession, alert: Alert) -> None:
    session.add(
        AlertRecord(
            key=alert.key,
            source=alert.source,
            severity=alert.severity.value,
            type=alert.type,
            summary=alert.summary,
            affects=alert.affects,
            received_at=alert.at,
        )
    )
    await session.flush()


async def save_incident(session: AsyncSession, state: IncidentState) -> bool:
    """Copy the workflow's state into the store; True when the status changed."""
    row = await session.get(IncidentRecord, state.incident_id, with_for_update=True)
    if row is None:
        row = IncidentRecord(id=state.incident_id, status="")
        session.add(row)
    changed = row.status != state.status.value
    for name in _COPIED:
        setattr(row, name, getattr(state, name))
    row.first_alert_at = state.first_alert_at or state.firing_since  # type: ignore[assignment]
    row.severity = state.severity.value
    row.status = state.status.value
    row.approved_by = list(state.approved_by)
    await session.flush()
    return changed


def view(row: IncidentRecord) -> dict[str, Any]:
    """An incident as plain data, with the times that matter for a review."""

    def after(later: datetime | None, earlier: datetime | None) -> float | None:
        return None if later is None or earlier is None else (later - earlier).total_seconds()

    return {
        "incident_id": row.id,
        "key": row.key,
        "source": row.source,
        "type": row.type,
        "severity": row.severity,
        "summary": row.summary,
        "affects": row.affects,
        "status": row.status,
        "alerts": row.alerts,
        "flaps": row.flaps,
        "first_alert_at": row.first_alert_at,
        "confirmed_at": row.confirmed_at,
        "proposed_at": row.proposed_at,
        "launched_at": row.launched_at,
        "recovered_at": row.recovered_at,
        "ended_at": row.ended_at,
        "template": row.template,
        "segment": row.segment,
        "audience_size": row.audience_size,
        "broadcast_id": row.broadcast_id,
        "approved_by": list(row.approved_by or []),
        "reason": row.reason,
        "alert_to_confirmed_s": after(row.confirmed_at, row.first_alert_at),
        "confirmed_to_launch_s": after(row.launched_at, row.confirmed_at),
        "alert_to_launch_s": after(row.launched_at, row.first_alert_at),
    }


async def get_incident(session: AsyncSession, incident_id: str) -> dict[str, Any]:
    row = await session.get(IncidentRecord, incident_id)
    if row is None:
        raise NotFound("incident", incident_id)
    return view(row)


async def incident_for_broadcast(session: AsyncSession, broadcast_id: str) -> dict[str, Any] | None:
    row = (
        await session.execute(
            select(IncidentRecord).where(IncidentRecord.broadcast_id == broadcast_id)
        )
    ).scalar_one_or_none()
    return None if row is None else view(row)


async def list_incidents(
    session: AsyncSession,
    *,
    key: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Incidents, newest first."""
    query = select(IncidentRecord).order_by(IncidentRecord.first_alert_at.desc()).limit(limit)
    if key is not None:
        query = query.where(IncidentRecord.key == key)
    if status is not None:
        query = query.where(IncidentRecord.status == status)
    return [view(row) for row in (await session.execute(query)).scalars()]


async def alerts_for(session: AsyncSession, *, key: str) -> Sequence[AlertRecord]:
    rows = await session.execute(
        select(AlertRecord).where(AlertRecord.key == key).order_by(AlertRecord.id)
    )
    return rows.scalars().all()
