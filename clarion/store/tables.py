"""Clarion's tables (SQLAlchemy 2). Every change here goes with an Alembic migration."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime}


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    external_id: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(300), default="")
    locale: Mapped[str] = mapped_column(String(35), default="en")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    contact_points: Mapped[list[ContactPoint]] = relationship(
        back_populates="customer", cascade="all, delete-orphan", lazy="selectin"
    )


class ContactPoint(Base):
    """An address to reach a customer: ``email`` (address) or ``phone`` (E.164)."""

    __tablename__ = "contact_points"
    __table_args__ = (UniqueConstraint("customer_id", "kind", name="uq_contact_points_kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    customer: Mapped[Customer] = relationship(back_populates="contact_points")


class ConsentRecord(Base):
    """Append-only consent ledger: the latest record per channel x purpose is the state."""

    __tablename__ = "consent_records"
    __table_args__ = (Index("ix_consent_lookup", "customer_id", "channel", "purpose"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(64))
    jurisdiction: Mapped[str | None] = mapped_column(String(16), nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class Template(Base):
    __tablename__ = "templates"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    versions: Mapped[list[TemplateVersion]] = relationship(
        back_populates="template", order_by="TemplateVersion.version", lazy="selectin"
    )


class TemplateVersion(Base):
    """An immutable published version of a template."""

    __tablename__ = "template_versions"
    __table_args__ = (UniqueConstraint("template_id", "version", name="uq_template_versions"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    purpose: Mapped[str] = mapped_column(String(32))
    category: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="approved")
    content: Mapped[dict[str, Any]] = mapped_column()
    content_hash: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[datetime] = mapped_column(default=utcnow)

    template: Mapped[Template] = relationship(back_populates="versions")


class Delivery(Base):
    """One row per message attempt on one channel, keyed by ``{message_id}:{channel}``."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_created_at", "created_at"),)

    attempt_id: Mapped[str] = mapped_column(String(240), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(200), index=True)
    workflow_id: Mapped[str] = mapped_column(String(300))
    customer_external_id: Mapped[str] = mapped_column(String(200), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    template: Mapped[str] = mapped_column(String(100))
    template_version: Mapped[int] = mapped_column(Integer)
    purpose: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(32), default="")
    provider_message_id: Mapped[str] = mapped_column(String(200), default="", index=True)
    # The latest status the provider reported (status callbacks): queued, sent, delivered,
    # undelivered, failed; "" until the first callback.
    provider_status: Mapped[str] = mapped_column(String(32), default="")
    error: Mapped[str] = mapped_column(Text, default="")
    tries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # Outcomes, for delivery analytics (clarion/store/reports.py). Every write that sets
    # one also moves updated_at, which is how the rollup finds the days to recompute.
    journey: Mapped[str] = mapped_column(String(100), default="")  # "" outside journeys
    # The customer's segment when the attempt started (CLARION_REPORT_SEGMENT_ATTRIBUTE).
    segment: Mapped[str] = mapped_column(String(100), default="")
    delivered_at: Mapped[datetime | None] = mapped_column(nullable=True)  # provider receipt
    acked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    fell_back: Mapped[bool] = mapped_column(Boolean, default=False)  # a later channel tried
    opted_out_at: Mapped[datetime | None] = mapped_column(nullable=True)  # attributed to it


class DeliveryRollup(Base):
    """Delivery counts per UTC day of the attempts' start and every report dimension,
    with log-bucket histograms of the seconds to send and to deliver (reports.py)."""

    __tablename__ = "delivery_rollup"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    day: Mapped[str] = mapped_column(String(10), index=True)  # YYYY-MM-DD (UTC)
    template: Mapped[str] = mapped_column(String(100))
    template_version: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(32))
    journey: Mapped[str] = mapped_column(String(100))
    segment: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    attempted: Mapped[int] = mapped_column(Integer)
    delivered: Mapped[int] = mapped_column(Integer)
    fell_back: Mapped[int] = mapped_column(Integer)
    acknowledged: Mapped[int] = mapped_column(Integer)
    opted_out: Mapped[int] = mapped_column(Integer)
    send_hist: Mapped[dict[str, Any]] = mapped_column()  # {bucket: count}
    deliver_hist: Mapped[dict[str, Any]] = mapped_column()


class DeliveryRollupState(Base):
    """One row: the rollup holds every day before ``rolled_until`` as of ``watermark``."""

    __tablename__ = "delivery_rollup_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    watermark: Mapped[datetime | None] = mapped_column(nullable=True)
    rolled_until: Mapped[str] = mapped_column(String(10), default="")  # YYYY-MM-DD, exclusive


class AuditEvent(Base):
    """Append-only audit trail: every decision Clarion makes about a message."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_customer", "customer_external_id", "id"),
        Index("ux_audit_events_seq", "seq", unique=True),
        # Rows not sealed yet: few at any time (a transaction's own, until it commits).
        Index(
            "ix_audit_events_unsealed",
            "id",
            postgresql_where=text("seq IS NULL"),
            sqlite_where=text("seq IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    customer_external_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    message_id: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    workflow_id: Mapped[str | None] = mapped_column(String(300), nullable=True)
    channel: Mapped[str | None] = mapped_column(String(16), nullable=True)
    actor: Mapped[str] = mapped_column(String(100), default="system")
    reason: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Set for events that must appear once per message even when an activity is retried.
    dedupe_key: Mapped[str | None] = mapped_column(String(300), nullable=True, unique=True)
    # The hash chain (clarion/audit.py), written when the appending transaction commits:
    # position in the chain, hash of the event before, hash of this one (hex SHA-256).
    seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    hash: Mapped[str | None] = mapped_column(String(64), nullable=True)


class AuditChain(Base):
    """The head of the audit chain: one row (id 1), the last sealed ``seq`` and its hash.
    Sealing locks it, so events are sealed one transaction at a time."""

    __tablename__ = "audit_chain"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class Journey(Base):
    __tablename__ = "journeys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    versions: Mapped[list[JourneyVersion]] = relationship(
        back_populates="journey", order_by="JourneyVersion.version", lazy="selectin"
    )


class JourneyVersion(Base):
    """An immutable published version of a journey definition."""

    __tablename__ = "journey_versions"
    __table_args__ = (UniqueConstraint("journey_id", "version", name="uq_journey_versions"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]] = mapped_column()
    content_hash: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[datetime] = mapped_column(default=utcnow)

    journey: Mapped[Journey] = relationship(back_populates="versions")


class JourneyRun(Base):
    """One customer's pass through one journey (all its continued runs together)."""

    __tablename__ = "journey_runs"
    __table_args__ = (Index("ix_journey_runs_customer", "customer_external_id", "journey"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    journey: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    customer_external_id: Mapped[str] = mapped_column(String(200))
    workflow_id: Mapped[str] = mapped_column(String(300))
    temporal_run_id: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="running")
    reason: Mapped[str] = mapped_column(Text, default="")
    current_step: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)


class JourneyStepRecord(Base):
    """A step a journey run entered, with when it left and how."""

    __tablename__ = "journey_steps"
    __table_args__ = (
        UniqueConstraint("run_id", "seq", name="uq_journey_steps_seq"),
        Index("ix_journey_steps_step", "run_id", "step"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("journey_runs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    entered_at: Mapped[datetime] = mapped_column()
    left_at: Mapped[datetime | None] = mapped_column(nullable=True)
    outcome: Mapped[str] = mapped_column(Text, default="")
    variant: Mapped[str | None] = mapped_column(String(32), nullable=True)


class Broadcast(Base):
    """A crisis broadcast: one incident, an audience snapshot, messages by generation."""

    __tablename__ = "broadcasts"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    incident_id: Mapped[str] = mapped_column(String(100), index=True)
    title: Mapped[str] = mapped_column(String(300))
    severity: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), default="preparing")
    audience: Mapped[dict[str, Any]] = mapped_column(default=dict)  # segment or list, and tiers
    current_gen: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    launched_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)


class BroadcastMessage(Base):
    """Generation ``gen`` of a broadcast's message: 1 is the launch, then updates, resolution."""

    __tablename__ = "broadcast_messages"

    broadcast_id: Mapped[str] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True
    )
    gen: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # launch, update, resolution
    template: Mapped[str] = mapped_column(String(100))
    template_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BroadcastRecipient(Base):
    """One recipient of a broadcast, in dispatch order (``seq`` ascends with the tier)."""

    __tablename__ = "broadcast_recipients"
    __table_args__ = (
        Index("ix_broadcast_recipients_customer", "broadcast_id", "customer_external_id"),
    )

    broadcast_id: Mapped[str] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_external_id: Mapped[str] = mapped_column(String(200))
    tier: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    channel: Mapped[str | None] = mapped_column(String(16), nullable=True)
    gen_sent: Mapped[int] = mapped_column(Integer, default=0)  # newest generation delivered
    reason: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[datetime | None] = mapped_column(nullable=True)
    acked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    escalated_at: Mapped[datetime | None] = mapped_column(nullable=True)


class RateBucket(Base):
    """A token bucket per provider channel, shared by every worker through the store."""

    __tablename__ = "rate_buckets"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    tokens: Mapped[float] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AudienceListEntry(Base):
    """An explicit audience (a list of customer ids), staged in the store for a broadcast."""

    __tablename__ = "audience_lists"

    list_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    customer_external_id: Mapped[str] = mapped_column(String(200), primary_key=True)


class Operator(Base):
    """A person who operates Clarion: roles, an API token (only its hash is kept), and
    where Clarion notifies them (approval requests)."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ApprovalRequest(Base):
    """A message waiting for a human decision; the workflow ``approval:<id>`` owns it."""

    __tablename__ = "approval_requests"
    __table_args__ = (Index("ix_approval_requests_status", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(300))
    subject_kind: Mapped[str] = mapped_column(String(32))  # message / journey / broadcast
    subject_id: Mapped[str] = mapped_column(String(200))  # message id, broadcast id, ...
    category: Mapped[str] = mapped_column(String(64))
    template: Mapped[str] = mapped_column(String(100))
    template_version: Mapped[int] = mapped_column(Integer)
    customer_external_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    preview: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    requested_by: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    level: Mapped[int] = mapped_column(Integer, default=0)
    approvals_needed: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    escalated_at: Mapped[datetime | None] = mapped_column(nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)
    outcome_reason: Mapped[str] = mapped_column(Text, default="")


class ApprovalDecisionRecord(Base):
    """One decision on a request (two-approver rules record two)."""

    __tablename__ = "approval_decisions"

    request_id: Mapped[str] = mapped_column(
        ForeignKey("approval_requests.id", ondelete="CASCADE"), primary_key=True
    )
    operator: Mapped[str] = mapped_column(String(100), primary_key=True)
    approved: Mapped[bool] = mapped_column()
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)


class ErasureRequest(Base):
    """The tombstone of an erasure: who asked, when, under which reference, and the
    receipt. The customer appears only as a hash (clarion.audit.ref of their id)."""

    __tablename__ = "erasure_requests"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    customer_ref: Mapped[str] = mapped_column(String(64), index=True)
    reference: Mapped[str] = mapped_column(String(200), default="")
    requested_by: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="running")  # running / done
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    receipt: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AgentTask(Base):
    """Work for a human agent: a message nobody acknowledged after every channel."""

    __tablename__ = "agent_tasks"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(200), index=True)
    customer_external_id: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(nullable=True)


class IncidentRecord(Base):
    """An incident opened by operational alerts (the IncidentWorkflow's state, copied
    after every change): its key, its status, and the times from first alert to launch."""

    __tablename__ = "incidents"
    __table_args__ = (Index("ix_incidents_key", "key", "first_alert_at"),)

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(100), default="")
    type: Mapped[str] = mapped_column(String(64), default="")
    severity: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text, default="")
    affects: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(32))
    alerts: Mapped[int] = mapped_column(Integer, default=0)
    flaps: Mapped[int] = mapped_column(Integer, default=0)
    first_alert_at: Mapped[datetime] = mapped_column()
    recovered_at: Mapped[datetime | None] = mapped_column(nullable=True)
    confirmed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    proposed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    launched_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    template: Mapped[str | None] = mapped_column(String(100), nullable=True)
    segment: Mapped[str | None] = mapped_column(Text, nullable=True)
    audience_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    broadcast_id: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    approved_by: Mapped[list[str]] = mapped_column(JSON, default=list)
    reason: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AlertRecord(Base):
    """Every alert received, as it came (duplicates too)."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_key", "key", "received_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(100))
    severity: Mapped[str] = mapped_column(String(16))
    type: Mapped[str] = mapped_column(String(64), default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    affects: Mapped[str | None] = mapped_column(Text, nullable=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
