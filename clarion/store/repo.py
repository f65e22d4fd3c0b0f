"""Repositories: keyword-only functions over an AsyncSession. The caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.customers import CustomerRecord
from clarion.errors import NotFound
from clarion.models import AuditKind, Channel, ConsentStatus, DeliveryStatus, Purpose
from clarion.policy import ConsentFact
from clarion.policy.compliance import FrequencyCap
from clarion.store.audit import mark_pending
from clarion.store.tables import (
    AuditEvent,
    ConsentRecord,
    ContactPoint,
    Customer,
    Delivery,
    Template,
    TemplateVersion,
    utcnow,
)
from clarion.templates import TemplateDefinition

# ---------------------------------------------------------------- customers


async def get_customer(session: AsyncSession, *, external_id: str) -> Customer | None:
    return (
        await session.execute(select(Customer).where(Customer.external_id == external_id))
    ).scalar_one_or_none()


async def require_customer(session: AsyncSession, *, external_id: str) -> Customer:
    customer = await get_customer(session, external_id=external_id)
    if customer is None:
        raise NotFound("customer", external_id)
    return customer


@dataclass(slots=True)
class ContactSnapshot:
    kind: str
    value: str


@dataclass(slots=True)
class CustomerSnapshot:
    """A customer read without the ORM, for the bulk paths (a broadcast batch reads 100 at a
    time): the same attributes the templates and policies use, at a fraction of the cost."""

    id: int
    external_id: str
    name: str
    locale: str
    timezone: str
    attributes: dict[str, Any]
    contact_points: list[ContactSnapshot]


def customer_ids_of(external_ids: Select[Any]) -> Select[Any]:
    """A query of the ids of the customers whose external ids ``external_ids`` selects."""
    return select(Customer.id).where(Customer.external_id.in_(external_ids))


async def customer_snapshots(
    session: AsyncSession, *, external_ids: Sequence[str] | Select[Any]
) -> dict[str, CustomerSnapshot]:
    """The customers with these external ids (unknown ids are left out), in two queries.
    ``external_ids`` may be a query that selects them (a broadcast chunk's recipients):
    the database reads them itself, rather than from a thousand bound values.

    Core queries on the session's connection (bulk reads of a broadcast: no ORM state,
    no autoflush; what the session holds unflushed is not seen)."""
    if not isinstance(external_ids, Select) and not external_ids:
        return {}
    connection = await session.connection()
    rows = await connection.execute(
        select(
            Customer.id,
            Customer.external_id,
            Customer.name,
            Customer.locale,
            Customer.timezone,
            Customer.attributes,
        ).where(Customer.external_id.in_(external_ids))
    )
    by_id = {
        row[0]: CustomerSnapshot(row[0], row[1], row[2], row[3], row[4], row[5] or {}, [])
        for row in rows
    }
    if by_id:
        of = (
            ContactPoint.customer_id.in_(customer_ids_of(external_ids))
            if isinstance(external_ids, Select)
            else ContactPoint.customer_id.in_(list(by_id))
        )
        points = await connection.execute(
            select(ContactPoint.customer_id, ContactPoint.kind, ContactPoint.value).where(of)
        )
        for customer_id, kind, value in points:
            by_id[customer_id].contact_points.append(ContactSnapshot(kind, value))
    return {c.external_id: c for c in by_id.values()}


async def consent_facts_for(
    session: AsyncSession, *, customer_ids: Sequence[int] | Select[Any]
) -> dict[int, list[ConsentFact]]:
    """Consent facts of many customers at once, oldest first per customer (a Core query on
    the session's connection, as :func:`customer_snapshots`; ``customer_ids`` may be a
    query that selects them)."""
    facts: dict[int, list[ConsentFact]] = {}
    if not isinstance(customer_ids, Select) and not customer_ids:
        return facts
    rows = await (await session.connection()).execute(
        select(
            ConsentRecord.customer_id,
            ConsentRecord.channel,
            ConsentRecord.purpose,
            ConsentRecord.status,
            ConsentRecord.recorded_at,
            ConsentRecord.source,
        )
        .where(ConsentRecord.customer_id.in_(customer_ids))
        .order_by(ConsentRecord.recorded_at, ConsentRecord.id)
    )
    for customer_id, channel, purpose, status, recorded_at, source in rows:
        facts.setdefault(customer_id, []).append(
            ConsentFact(
                channel=Channel(channel),
                purpose=Purpose(purpose),
                status=ConsentStatus(status),
                recorded_at=recorded_at,
                source=source,
            )
        )
    return facts


def contact_of(customer: Customer | CustomerSnapshot, kind: str) -> str | None:
    for point in customer.contact_points:
        if point.kind == kind:
            return point.value
    return None


def _set_contact(customer: Customer, kind: str, value: str | None) -> None:
    existing = next((p for p in customer.contact_points if p.kind == kind), None)
    if value is None:
        return  # an import without the column keeps what we had
    if existing is None:
        customer.contact_points.append(ContactPoint(kind=kind, value=value))
    elif existing.value != value:
        existing.value = value


async def upsert_customer(
    session: AsyncSession, *, record: CustomerRecord
) -> tuple[Customer, bool]:
    """Insert or update by external id; returns (customer, created)."""
    customer = await get_customer(session, external_id=record.external_id)
    created = customer is None
    if customer is None:
        customer = Customer(external_id=record.external_id, attributes={}, contact_points=[])
        session.add(customer)
    customer.name = record.name
    customer.locale = record.locale
    customer.timezone = record.timezone
    customer.attributes = {**(customer.attributes or {}), **record.attributes}
    _set_contact(customer, "email", record.email)
    _set_contact(customer, "phone", record.phone)
    await session.flush()
    return customer, created


async def count_customers(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(Customer))).scalar_one())


# ---------------------------------------------------------------- consent


async def record_consent(
    session: AsyncSession,
    *,
    customer: Customer,
    channel: Channel,
    purpose: Purpose,
    status: ConsentStatus,
    source: str,
    jurisdiction: str | None = None,
    at: datetime | None = None,
) -> ConsentRecord:
    """Append to the ledger; the jurisdiction defaults to the customer's (attribute)."""
    if jurisdiction is None:
        found = (customer.attributes or {}).get("jurisdiction")
        jurisdiction = str(found)[:16] if found else None
    record = ConsentRecord(
        customer_id=customer.id,
        channel=channel.value,
        purpose=purpose.value,
        status=status.value,
        source=source,
        jurisdiction=jurisdiction,
        recorded_at=at or utcnow(),
    )
    session.add(record)
    await session.flush()
    return record


async def consent_facts(session: AsyncSession, *, customer: Customer) -> list[ConsentFact]:
    rows = (
        await session.execute(
            select(ConsentRecord)
            .where(ConsentRecord.customer_id == customer.id)
            .order_by(ConsentRecord.recorded_at, ConsentRecord.id)
        )
    ).scalars()
    return [
        ConsentFact(
            channel=Channel(r.channel),
            purpose=Purpose(r.purpose),
            status=ConsentStatus(r.status),
            recorded_at=r.recorded_at,
            source=r.source,
        )
        for r in rows
    ]


async def change_consent(
    session: AsyncSession,
    *,
    customer: Customer,
    channel: Channel,
    purpose: Purpose,
    status: ConsentStatus,
    source: str,
    actor: str,
    jurisdiction: str | None = None,
) -> ConsentRecord:
    """Append to the consent ledger and audit the change (the CLI and the API)."""
    record = await record_consent(
        session,
        customer=customer,
        channel=channel,
        purpose=purpose,
        status=status,
        source=source,
        jurisdiction=jurisdiction,
    )
    await append_audit(
        session,
        kind=AuditKind.CONSENT_CHANGED,
        customer_external_id=customer.external_id,
        channel=channel,
        reason=status.value,
        actor=actor,
        detail={
            "purpose": purpose.value,
            "source": source,
            **({"jurisdiction": jurisdiction} if jurisdiction else {}),
        },
    )
    return record


async def cap_send_times(
    session: AsyncSession,
    *,
    caps: Sequence[FrequencyCap],
    customer_external_id: str,
    purpose: Purpose,
    now: datetime,
    exclude_message_id: str,
) -> dict[int, list[datetime]]:
    """For each cap (by position), when the messages it counts went out: what
    clarion.policy.compliance.decide_cap takes."""
    return {
        i: await send_times(
            session,
            customer_external_id=customer_external_id,
            purpose=purpose,
            channels=cap.counted_channels(),
            since=now - cap.window,
            exclude_message_id=exclude_message_id,
        )
        for i, cap in enumerate(caps)
    }


async def send_times(
    session: AsyncSession,
    *,
    customer_external_id: str,
    purpose: Purpose,
    channels: Sequence[Channel],
    since: datetime,
    exclude_message_id: str,
) -> list[datetime]:
    """When this customer's other messages of ``purpose`` on ``channels`` went out (or
    started going out) after ``since``: what a frequency cap counts."""
    when = func.coalesce(Delivery.sent_at, Delivery.updated_at)
    rows = await session.execute(
        select(when).where(
            Delivery.customer_external_id == customer_external_id,
            Delivery.purpose == purpose.value,
            Delivery.channel.in_([c.value for c in channels]),
            Delivery.status.in_([DeliveryStatus.SENT.value, DeliveryStatus.SENDING.value]),
            Delivery.message_id != exclude_message_id,
            when > since,
        )
    )
    return [t if t.tzinfo else t.replace(tzinfo=UTC) for (t,) in rows]


# ---------------------------------------------------------------- templates


@dataclass(frozen=True)
class PublishResult:
    name: str
    version: int
    changed: bool  # False: identical to the latest version, nothing new was published


async def publish_template(
    session: AsyncSession, *, definition: TemplateDefinition
) -> PublishResult:
    """Publish a new immutable version unless the latest one has the same content."""
    template = (
        await session.execute(select(Template).where(Template.name == definition.name))
    ).scalar_one_or_none()
    if template is None:
        template = Template(name=definition.name, versions=[])
        session.add(template)
        await session.flush()
    digest = definition.content_hash()
    latest = template.versions[-1] if template.versions else None
    if latest is not None and latest.content_hash == digest:
        return PublishResult(definition.name, latest.version, changed=False)
    version = TemplateVersion(
        template_id=template.id,
        version=(latest.version + 1) if latest else 1,
        purpose=definition.purpose.value,
        category=definition.category,
        content=definition.content(),
        content_hash=digest,
    )
    template.versions.append(version)
    await session.flush()
    return PublishResult(definition.name, version.version, changed=True)


async def list_templates(session: AsyncSession) -> Sequence[Template]:
    return (await session.execute(select(Template).order_by(Template.name))).scalars().all()


async def get_template_version(
    session: AsyncSession, *, name: str, version: int | None = None
) -> tuple[TemplateVersion, TemplateDefinition]:
    """The given version, or the latest; raises NotFound."""
    query = (
        select(TemplateVersion)
        .join(Template)
        .where(Template.name == name)
        .order_by(TemplateVersion.version.desc())
    )
    if version is not None:
        query = query.where(TemplateVersion.version == version)
    row = (await session.execute(query.limit(1))).scalar_one_or_none()
    if row is None:
        raise NotFound("template", name if version is None else f"{name} v{version}")
    return row, TemplateDefinition.model_validate({"name": name, **row.content})


# ---------------------------------------------------------------- deliveries


def attempt_id(message_id: str, channel: Channel) -> str:
    return f"{message_id}:{channel.value}"


async def get_delivery(session: AsyncSession, *, attempt: str) -> Delivery | None:
    return await session.get(Delivery, attempt)


async def deliveries_for_message(session: AsyncSession, *, message_id: str) -> Sequence[Delivery]:
    return (
        (
            await session.execute(
                select(Delivery)
                .where(Delivery.message_id == message_id)
                .order_by(Delivery.created_at)
            )
        )
        .scalars()
        .all()
    )


async def set_delivery_status(
    session: AsyncSession,
    *,
    delivery: Delivery,
    status: DeliveryStatus,
    provider: str = "",
    provider_message_id: str = "",
    error: str = "",
) -> None:
    delivery.status = status.value
    if provider:
        delivery.provider = provider
    if provider_message_id:
        delivery.provider_message_id = provider_message_id
    delivery.error = error
    if status is DeliveryStatus.SENT:
        delivery.sent_at = utcnow()
    await session.flush()


# ------------------------------------------------- delivery outcomes (reports)
# Each write moves updated_at too: the report rollup recomputes the days it touches.


def segment_of(customer: Customer | CustomerSnapshot, attribute: str) -> str:
    """The customer's segment for reports: the value of ``attribute``, "" without it."""
    value = (customer.attributes or {}).get(attribute) if attribute else None
    return "" if value is None else str(value)[:100]


async def mark_fell_back(session: AsyncSession, *, message_id: str, except_attempt: str) -> int:
    """A later channel of the message is being attempted: the earlier attempts fell back."""
    result = await session.execute(
        update(Delivery)
        .where(
            Delivery.message_id == message_id,
            Delivery.attempt_id != except_attempt,
            Delivery.fell_back.is_(False),
        )
        .values(fell_back=True, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def mark_acknowledged(session: AsyncSession, *, attempt: str, at: datetime) -> bool:
    """The message was acknowledged after this attempt (the first acknowledgement counts)."""
    result = await session.execute(
        update(Delivery)
        .where(Delivery.attempt_id == attempt, Delivery.acked_at.is_(None))
        .values(acked_at=at, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def mark_opted_out(
    session: AsyncSession,
    *,
    at: datetime,
    message_id: str | None = None,
    channel: Channel | None = None,
    customer_external_id: str | None = None,
    since: datetime | None = None,
) -> str | None:
    """Attribute an opt-out to one delivery: the attempt of ``message_id`` on ``channel``
    (one-click unsubscribe), or the customer's latest delivery sent on ``channel`` since
    ``since`` (an SMS STOP). Returns the attempt id, None when none qualifies."""
    query = select(Delivery.attempt_id).where(
        Delivery.status == DeliveryStatus.SENT.value, Delivery.opted_out_at.is_(None)
    )
    if channel is not None:
        query = query.where(Delivery.channel == channel.value)
    if message_id is not None:
        query = query.where(Delivery.message_id == message_id)
    if customer_external_id is not None:
        query = query.where(Delivery.customer_external_id == customer_external_id)
    if since is not None:
        query = query.where(Delivery.sent_at >= since, Delivery.sent_at <= at)
    found = (
        await session.execute(query.order_by(Delivery.sent_at.desc()).limit(1))
    ).scalar_one_or_none()
    if found is None:
        return None
    await session.execute(
        update(Delivery)
        .where(Delivery.attempt_id == found)
        .values(opted_out_at=at, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return str(found)


# ---------------------------------------------------------------- audit


async def append_audit(
    session: AsyncSession,
    *,
    kind: AuditKind,
    customer_external_id: str | None = None,
    message_id: str | None = None,
    workflow_id: str | None = None,
    channel: Channel | None = None,
    reason: str = "",
    detail: dict[str, Any] | None = None,
    actor: str = "system",
    dedupe_key: str | None = None,
) -> AuditEvent | None:
    """Append an event; with ``dedupe_key``, an event already recorded is not repeated.

    The event joins the audit chain (seq and hashes) when the transaction commits."""
    if dedupe_key is not None:
        found = (
            await session.execute(select(AuditEvent.id).where(AuditEvent.dedupe_key == dedupe_key))
        ).first()
        if found is not None:
            return None
    event = AuditEvent(
        kind=kind.value,
        customer_external_id=customer_external_id,
        message_id=message_id,
        workflow_id=workflow_id,
        channel=channel.value if channel else None,
        reason=reason,
        detail=detail or {},
        actor=actor,
        dedupe_key=dedupe_key,
    )
    session.add(event)
    await session.flush()
    mark_pending(session)
    return event


async def audit_exists(session: AsyncSession, *, dedupe_key: str) -> bool:
    found = await session.execute(select(AuditEvent.id).where(AuditEvent.dedupe_key == dedupe_key))
    return found.first() is not None


async def audit_events(
    session: AsyncSession,
    *,
    customer_external_id: str | None = None,
    message_id: str | None = None,
    workflow_id: str | None = None,
    kind: AuditKind | str | None = None,
    actor: str | None = None,
    limit: int = 1000,
) -> Sequence[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id).limit(limit)
    if workflow_id is not None:
        query = query.where(AuditEvent.workflow_id == workflow_id)
    if kind is not None:
        query = query.where(AuditEvent.kind == str(kind))
    if actor is not None:
        query = query.where(AuditEvent.actor == actor)
    if customer_external_id is not None:
        query = query.where(AuditEvent.customer_external_id == customer_external_id)
    if message_id is not None:
        query = query.where(AuditEvent.message_id == message_id)
    return (await session.execute(query)).scalars().all()
