"""Approval requests and decisions as kept in the store (the workflow owns the truth;
these rows are what operators list and read)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.errors import NotFound
from clarion.store.tables import ApprovalDecisionRecord, ApprovalRequest, utcnow


@dataclass(frozen=True)
class DecisionView:
    operator: str
    approved: bool
    reason: str
    at: datetime


@dataclass(frozen=True)
class RequestView:
    id: str
    workflow_id: str
    subject_kind: str
    subject_id: str
    category: str
    template: str
    template_version: int
    customer_id: str | None
    requested_by: str
    status: str
    level: int
    approvals_needed: int
    created_at: datetime
    decided_at: datetime | None
    outcome_reason: str
    preview: dict[str, Any] = field(default_factory=dict)
    decisions: list[DecisionView] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "workflow_id": self.workflow_id,
            "subject": {"kind": self.subject_kind, "id": self.subject_id},
            "category": self.category,
            "template": self.template,
            "template_version": self.template_version,
            "customer_id": self.customer_id,
            "requested_by": self.requested_by,
            "status": self.status,
            "level": self.level,
            "approvals_needed": self.approvals_needed,
            "created_at": self.created_at.isoformat(),
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "outcome_reason": self.outcome_reason,
            "preview": self.preview,
            "decisions": [
                {
                    "operator": d.operator,
                    "approved": d.approved,
                    "reason": d.reason,
                    "at": d.at.isoformat(),
                }
                for d in self.decisions
            ],
        }


def _view(row: ApprovalRequest, decisions: list[ApprovalDecisionRecord]) -> RequestView:
    return RequestView(
        id=row.id,
        workflow_id=row.workflow_id,
        subject_kind=row.subject_kind,
        subject_id=row.subject_id,
        category=row.category,
        template=row.template,
        template_version=row.template_version,
        customer_id=row.customer_external_id,
        requested_by=row.requested_by,
        status=row.status,
        level=row.level,
        approvals_needed=row.approvals_needed,
        created_at=row.created_at,
        decided_at=row.decided_at,
        outcome_reason=row.outcome_reason,
        preview=dict(row.preview or {}),
        decisions=[DecisionView(d.operator, d.approved, d.reason, d.at) for d in decisions],
    )


async def open_request(
    session: AsyncSession,
    *,
    request_id: str,
    workflow_id: str,
    subject_kind: str,
    subject_id: str,
    category: str,
    template: str,
    template_version: int,
    customer_id: str | None,
    preview: dict[str, Any],
    requested_by: str,
    approvals_needed: int,
) -> bool:
    """Record a pending request; False when it exists already (a retried activity)."""
    if await session.get(ApprovalRequest, request_id) is not None:
        return False
    session.add(
        ApprovalRequest(
            id=request_id,
            workflow_id=workflow_id,
            subject_kind=subject_kind,
            subject_id=subject_id,
            category=category,
            template=template,
            template_version=template_version,
            customer_external_id=customer_id,
            preview=preview,
            requested_by=requested_by,
            status="pending",
            level=0,
            approvals_needed=approvals_needed,
        )
    )
    await session.flush()
    return True


async def record_decision(
    session: AsyncSession, *, request_id: str, operator: str, approved: bool, reason: str
) -> None:
    if await session.get(ApprovalDecisionRecord, (request_id, operator)) is None:
        session.add(
            ApprovalDecisionRecord(
                request_id=request_id, operator=operator, approved=approved, reason=reason
            )
        )
        await session.flush()


async def set_level(session: AsyncSession, *, request_id: str, level: int) -> None:
    row = await session.get(ApprovalRequest, request_id)
    if row is not None and row.status == "pending":
        row.level = level
        row.escalated_at = utcnow()


async def close_request(
    session: AsyncSession, *, request_id: str, status: str, reason: str
) -> None:
    row = await session.get(ApprovalRequest, request_id)
    if row is not None and row.status == "pending":
        row.status = status
        row.outcome_reason = reason
        row.decided_at = utcnow()


async def get_request(session: AsyncSession, request_id: str) -> RequestView:
    row = await session.get(ApprovalRequest, request_id)
    if row is None:
        raise NotFound("approval request", request_id)
    decisions = list(
        (
            await session.execute(
                select(ApprovalDecisionRecord)
                .where(ApprovalDecisionRecord.request_id == request_id)
                .order_by(ApprovalDecisionRecord.at)
            )
        ).scalars()
    )
    return _view(row, decisions)


async def list_requests(
    session: AsyncSession, *, status: str | None = "pending", limit: int = 200
) -> list[RequestView]:
    query = select(ApprovalRequest).order_by(ApprovalRequest.created_at).limit(limit)
    if status:
        query = query.where(ApprovalRequest.status == status)
    return [_view(r, []) for r in (await session.execute(query)).scalars()]
