"""Journey repositories: published versions, runs and their steps."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.errors import NotFound
from clarion.journeys.definition import JourneyDefinition
from clarion.journeys.models import JourneyRunStatus, StepRecord
from clarion.store.repo import PublishResult
from clarion.store.tables import Journey, JourneyRun, JourneyStepRecord, JourneyVersion


async def publish_journey(session: AsyncSession, *, definition: JourneyDefinition) -> PublishResult:
    """A new immutable version, unless the latest one has the same content."""
    journey = (
        await session.execute(select(Journey).where(Journey.name == definition.name))
    ).scalar_one_or_none()
    if journey is None:
        journey = Journey(name=definition.name, versions=[])
        session.add(journey)
        await session.flush()
    digest = definition.content_hash()
    latest = journey.versions[-1] if journey.versions else None
    if latest is not None and latest.content_hash == digest:
        return PublishResult(definition.name, latest.version, changed=False)
    version = JourneyVersion(
        journey_id=journey.id,
        version=(latest.version + 1) if latest else 1,
        definition=definition.stored(),
        content_hash=digest,
    )
    journey.versions.append(version)
    await session.flush()
    return PublishResult(definition.name, version.version, changed=True)


async def list_journeys(session: AsyncSession) -> Sequence[Journey]:
    return (await session.execute(select(Journey).order_by(Journey.name))).scalars().all()


def definition_of(version: JourneyVersion) -> JourneyDefinition:
    return JourneyDefinition.model_validate(version.definition)


async def latest_definitions(session: AsyncSession) -> list[tuple[int, JourneyDefinition]]:
    return [
        (j.versions[-1].version, definition_of(j.versions[-1]))
        for j in await list_journeys(session)
    ]


async def get_journey_version(
    session: AsyncSession, *, name: str, version: int | None = None
) -> tuple[int, JourneyDefinition]:
    query = (
        select(JourneyVersion)
        .join(Journey)
        .where(Journey.name == name)
        .order_by(JourneyVersion.version.desc())
    )
    if version is not None:
        query = query.where(JourneyVersion.version == version)
    row = (await session.execute(query.limit(1))).scalar_one_or_none()
    if row is None:
        raise NotFound("journey", name if version is None else f"{name} v{version}")
    return row.version, definition_of(row)


async def start_run(
    session: AsyncSession,
    *,
    journey: str,
    version: int,
    customer_external_id: str,
    workflow_id: str,
    temporal_run_id: str,
    started_at: datetime,
) -> JourneyRun:
    """The run row for this workflow run; calling again (a retry) returns the same row."""
    existing = (
        await session.execute(
            select(JourneyRun).where(JourneyRun.temporal_run_id == temporal_run_id)
        )
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    run = JourneyRun(
        journey=journey,
        version=version,
        customer_external_id=customer_external_id,
        workflow_id=workflow_id,
        temporal_run_id=temporal_run_id,
        status=JourneyRunStatus.RUNNING.value,
        started_at=started_at,
    )
    session.add(run)
    await session.flush()
    return run


async def record_step(
    session: AsyncSession, *, run_id: int, seq: int, record: StepRecord, current: str | None
) -> None:
    """Insert or update step ``seq`` of a run (idempotent), and the run's current step."""
    row = (
        await session.execute(
            select(JourneyStepRecord).where(
                JourneyStepRecord.run_id == run_id, JourneyStepRecord.seq == seq
            )
        )
    ).scalar_one_or_none()
    if row is None:
        row = JourneyStepRecord(
            run_id=run_id, seq=seq, step=record.step, kind=record.kind, entered_at=record.entered_at
        )
        session.add(row)
    row.left_at = record.left_at
    row.outcome = record.outcome
    row.variant = record.variant
    run = await session.get(JourneyRun, run_id)
    if run is not None:
        run.current_step = current
    await session.flush()


async def finish_run(
    session: AsyncSession, *, run_id: int, status: JourneyRunStatus, reason: str, ended_at: datetime
) -> None:
    run = await session.get(JourneyRun, run_id)
    if run is None:
        raise NotFound("journey run", run_id)
    run.status = status.value
    run.reason = reason
    run.current_step = None
    run.ended_at = ended_at
    await session.flush()


async def runs_for_customer(
    session: AsyncSession, *, customer_external_id: str, journey: str | None = None
) -> Sequence[JourneyRun]:
    query = (
        select(JourneyRun)
        .where(JourneyRun.customer_external_id == customer_external_id)
        .order_by(JourneyRun.started_at, JourneyRun.id)
    )
    if journey is not None:
        query = query.where(JourneyRun.journey == journey)
    return (await session.execute(query)).scalars().all()


async def steps_of_run(session: AsyncSession, *, run_id: int) -> Sequence[JourneyStepRecord]:
    return (
        (
            await session.execute(
                select(JourneyStepRecord)
                .where(JourneyStepRecord.run_id == run_id)
                .order_by(JourneyStepRecord.seq)
            )
        )
        .scalars()
        .all()
    )


async def reentry_refusal(
    session: AsyncSession,
    *,
    definition: JourneyDefinition,
    customer_external_id: str,
    now: datetime,
) -> str | None:
    """Why this customer may not enter the journey now, or None when they may."""
    runs = await runs_for_customer(
        session, customer_external_id=customer_external_id, journey=definition.name
    )
    if not runs:
        return None
    if any(r.ended_at is None for r in runs):
        return "already in the journey"
    rule = definition.entry.reentry
    if rule.mode == "never":
        return "re-entry: never"
    if rule.mode == "after_days":
        last = max(r.ended_at for r in runs if r.ended_at is not None)
        assert rule.days is not None
        if now < last + timedelta(days=rule.days):
            return f"re-entry: after {rule.days} days (last run ended {last.isoformat()})"
    return None


async def template_problems(session: AsyncSession, *, definition: JourneyDefinition) -> list[str]:
    """Send steps naming a template that is not published."""
    from clarion.store.tables import Template

    known = set((await session.execute(select(Template.name))).scalars().all())
    return [
        f"steps.{sid}.send.template: unknown template {step.send.template!r}"
        for sid, step in definition.steps.items()
        if step.send is not None and step.send.template not in known
    ]
