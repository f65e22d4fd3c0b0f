"""Activities of the approval gate: the store's request row, notifications to approvers
through Clarion's own channels, and the audit trail of every step."""

from __future__ import annotations

from typing import Any

import structlog
from temporalio import activity

from activities.deliver import render_for, render_variables
from clarion.channels import OutgoingEmail, OutgoingSms, Provider
from clarion.config import Settings
from clarion.errors import ChannelError, NotFound, RenderError
from clarion.logging import get_logger
from clarion.models import (
    ApprovalCloseInput,
    ApprovalDecisionRecordInput,
    ApprovalGateInput,
    ApprovalLevelInput,
    ApprovalOpened,
    AuditKind,
    Channel,
)
from clarion.policy.approval import ApprovalRule
from clarion.store import Store, repo
from clarion.store import approvals as approvals_repo
from clarion.store import operators as operators_repo
from clarion.templates import RenderedEmail, RenderedSms, RenderedVoice, TemplateDefinition

log = get_logger(__name__)

FINAL_KIND = {
    "approved": AuditKind.APPROVED,
    "rejected": AuditKind.REJECTED,
    "expired": AuditKind.APPROVAL_EXPIRED,
    "cancelled": AuditKind.APPROVAL_CANCELLED,
}


def _preview_of(
    definition: TemplateDefinition, customer: Any, context: dict[str, Any], message_id: str
) -> dict[str, Any]:
    """Every channel variant of the customer's locale, rendered as it would go out."""
    preview: dict[str, Any] = {}
    variables = render_variables(customer, context, message_id)
    for channel in Channel:
        try:
            rendered = render_for(definition, customer, channel, variables)
        except RenderError as exc:
            if "has no" not in str(exc):
                preview[channel.value] = {"error": str(exc)}
            continue
        if isinstance(rendered, RenderedEmail):
            preview[channel.value] = {"subject": rendered.subject, "text": rendered.text}
            if rendered.html is not None:
                preview[channel.value]["html"] = rendered.html
        elif isinstance(rendered, RenderedSms):
            preview[channel.value] = {"body": rendered.body}
        elif isinstance(rendered, RenderedVoice):
            preview[channel.value] = {"say": rendered.say}
    return preview


def _source_preview(definition: TemplateDefinition) -> dict[str, Any]:
    """No single customer (a broadcast): the template's default locale as written."""
    locale = definition.locales[definition.default_locale]
    preview: dict[str, Any] = {"note": "template source; each recipient sees it rendered"}
    if locale.email is not None:
        preview["email"] = {"subject": locale.email.subject, "text": locale.email.text}
    if locale.sms is not None:
        preview["sms"] = {"body": locale.sms.body}
    if locale.voice is not None:
        preview["voice"] = {"say": locale.voice.say}
    return preview


def _message_of(request: approvals_repo.RequestView) -> str | None:
    """Approval events of a single message carry its id, so they show in its audit."""
    return request.subject_id if request.subject_kind == "message" else None


class ApprovalActivities:
    def __init__(
        self, store: Store, providers: dict[Channel, Provider], settings: Settings
    ) -> None:
        self.store = store
        self.providers = providers
        self.settings = settings

    @activity.defn(name="open_approval")
    async def open_approval(self, inp: ApprovalGateInput) -> ApprovalOpened:
        rule = ApprovalRule.model_validate(inp.rule)
        wf_id = activity.info().workflow_id or ""
        with structlog.contextvars.bound_contextvars(approval_id=inp.request_id, workflow_id=wf_id):
            async with self.store.transaction() as session:
                try:
                    if not inp.template:
                        raise NotFound("template", "(none attached to this request)")
                    _, definition = await repo.get_template_version(
                        session, name=inp.template, version=inp.template_version or None
                    )
                    customer = (
                        await repo.get_customer(session, external_id=inp.customer_id)
                        if inp.customer_id
                        else None
                    )
                except NotFound as exc:
                    preview: dict[str, Any] = {"error": str(exc)}
                else:
                    preview = (
                        _preview_of(definition, customer, inp.context, inp.subject_id)
                        if customer is not None
                        else _source_preview(definition)
                    )
                if inp.subject_kind == "incident" and "proposal" in inp.context:
                    preview["proposal"] = inp.context["proposal"]  # audience size, alert
                created = await approvals_repo.open_request(
                    session,
                    request_id=inp.request_id,
                    workflow_id=wf_id,
                    subject_kind=inp.subject_kind,
                    subject_id=inp.subject_id,
                    category=inp.category,
                    template=inp.template,
                    template_version=inp.template_version,
                    customer_id=inp.customer_id,
                    preview=preview,
                    requested_by=inp.requested_by,
                    approvals_needed=rule.approvals,
                )
                await repo.append_audit(
                    session,
                    kind=AuditKind.APPROVAL_REQUESTED,
                    customer_external_id=inp.customer_id,
                    message_id=inp.subject_id if inp.subject_kind == "message" else None,
                    workflow_id=wf_id,
                    actor=inp.requested_by,
                    detail={
                        "request": inp.request_id,
                        "subject": {"kind": inp.subject_kind, "id": inp.subject_id},
                        "category": inp.category,
                        "template": inp.template,
                        "version": inp.template_version,
                        "approvals_needed": rule.approvals,
                    },
                    dedupe_key=f"approval:{inp.request_id}:requested",
                )
                roster = await operators_repo.roster(session)
            if created:
                log.info("approval requested", category=inp.category)
            return ApprovalOpened(roster=roster)

    @activity.defn(name="load_roster")
    async def load_roster(self) -> ApprovalOpened:
        async with self.store.session() as session:
            return ApprovalOpened(roster=await operators_repo.roster(session))

    @activity.defn(name="ask_approvers")
    async def ask_approvers(self, data: ApprovalLevelInput) -> ApprovalOpened:
        """Move the request to ``level`` (audited as an escalation above 0) and notify the
        operators holding the roles asked at this level; returns who may decide now."""
        async with self.store.transaction() as session:
            roster = await operators_repo.roster(session)
            request = await approvals_repo.get_request(session, data.request_id)
            if data.level > 0:
                await approvals_repo.set_level(
                    session, request_id=data.request_id, level=data.level
                )
                await repo.append_audit(
                    session,
                    kind=AuditKind.APPROVAL_ESCALATED,
                    customer_external_id=request.customer_id,
                    message_id=_message_of(request),
                    workflow_id=data.workflow_id,
                    reason=f"no decision in time; level {data.level} asked",
                    detail={"request": data.request_id, "level": data.level, "roles": data.roles},
                    dedupe_key=f"approval:{data.request_id}:level:{data.level}",
                )
            operators = await operators_repo.list_operators(session)
        # Notify the holders of the roles this level asks (earlier levels were notified
        # when they were reached); never the requester.
        notify = set(data.notify)
        for op in operators:
            if notify.intersection(op.roles) and op.name != request.requested_by:
                await self._notify(op, data, request)
        return ApprovalOpened(roster=roster)

    async def _notify(
        self,
        op: operators_repo.OperatorInfo,
        data: ApprovalLevelInput,
        request: approvals_repo.RequestView,
    ) -> None:
        requested_by = request.requested_by
        subject = f"Approval needed: {data.category} message ({data.request_id})"
        text = (
            f"A {data.category} message requested by {requested_by} waits for your decision"
            f" (escalation level {data.level}).\n\n"
            f"See it:     clarion approvals show {data.request_id}\n"
            f"Approve it: clarion approvals approve {data.request_id}\n"
            f"Reject it:  clarion approvals reject {data.request_id} --reason '...'\n"
        )
        outgoing: list[tuple[Channel, OutgoingEmail | OutgoingSms]] = []
        if op.email:
            mid = f"approval-{data.request_id}-l{data.level}-{op.name}"
            outgoing.append((Channel.EMAIL, OutgoingEmail(mid, op.email, subject, text)))
        if op.phone:
            mid = f"approval-{data.request_id}-l{data.level}-{op.name}-sms"
            body = f"Clarion: approval needed for {data.category} ({data.request_id})."
            outgoing.append((Channel.SMS, OutgoingSms(mid, op.phone, body)))
        for channel, message in outgoing:
            key = f"approval:{data.request_id}:notified:{data.level}:{op.name}:{channel.value}"
            async with self.store.transaction() as session:
                if await repo.audit_exists(session, dedupe_key=key):
                    continue
            provider = self.providers.get(channel)
            if provider is None:
                continue
            try:
                await provider.send(message)
            except ChannelError as exc:  # a notification is best effort; the audit says so
                log.warning("approver not notified", operator=op.name, error=str(exc))
                reason = f"not notified: {exc}"
            else:
                reason = ""
            async with self.store.transaction() as session:
                await repo.append_audit(
                    session,
                    kind=AuditKind.APPROVAL_NOTIFIED,
                    message_id=_message_of(request),
                    workflow_id=data.workflow_id,
                    channel=channel,
                    reason=reason,
                    detail={"request": data.request_id, "operator": op.name, "level": data.level},
                    dedupe_key=key if not reason else None,
                )

    @activity.defn(name="record_approval_decision")
    async def record_approval_decision(self, data: ApprovalDecisionRecordInput) -> None:
        d = data.decision
        async with self.store.transaction() as session:
            request = await approvals_repo.get_request(session, data.request_id)
            if data.counted:
                await approvals_repo.record_decision(
                    session,
                    request_id=data.request_id,
                    operator=d.operator,
                    approved=d.approved,
                    reason=d.reason,
                )
            await repo.append_audit(
                session,
                kind=AuditKind.APPROVAL_DECISION if data.counted else AuditKind.APPROVAL_REFUSED,
                customer_external_id=request.customer_id,
                message_id=_message_of(request),
                workflow_id=data.workflow_id,
                actor=d.operator,
                reason=d.reason if data.counted else data.refusal,
                detail={
                    "request": data.request_id,
                    "approved": d.approved,
                    "operator_reason": d.reason,
                },
                dedupe_key=f"approval:{data.request_id}:decision:{d.operator}"
                if data.counted
                else None,
            )

    @activity.defn(name="close_approval")
    async def close_approval(self, data: ApprovalCloseInput) -> None:
        async with self.store.transaction() as session:
            request = await approvals_repo.get_request(session, data.request_id)
            await approvals_repo.close_request(
                session, request_id=data.request_id, status=data.status, reason=data.reason
            )
            await repo.append_audit(
                session,
                kind=FINAL_KIND[data.status],
                customer_external_id=request.customer_id,
                message_id=_message_of(request),
                workflow_id=data.workflow_id,
                actor=", ".join(data.decided_by) or "system",
                reason=data.reason,
                detail={"request": data.request_id, "decided_by": data.decided_by},
                dedupe_key=f"approval:{data.request_id}:closed",
            )
        log.info("approval closed", approval_id=data.request_id, status=data.status)
