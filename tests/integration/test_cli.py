"""The ``clarion`` command line as a user runs it: a real process, exit codes, --json."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from clarion.store import repo
from tests.conftest import Stack, add_customer, uid
from tests.support.processes import run_cli


def cli_settings(stack: Stack, temporal_address: str) -> object:
    return stack.settings.model_copy(update={"temporal_address": temporal_address})


async def test_customers_import_reports_bad_rows_and_keeps_good_ones(
    stack: Stack, tmp_path: Path
) -> None:
    a, b, c = uid("imp"), uid("imp"), uid("imp")
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text(
        "id,name,email,phone,locale,timezone,plan,region\n"
        f"{a},Ada,ada@example.com,+1 415 555 2671,en,America/Los_Angeles,pro,us-west\n"
        f"{b},Bob,bob@example,+14155552672,en,UTC,basic,\n"
        f"{c},Cy,cy@example.com,+33612345678,fr-fr,Europe/Paris,,eu-west\n"
    )
    result = await run_cli(stack.settings, "customers", "import", str(csv_file), "--json")
    assert result.code == 1, result
    report = json.loads(result.stdout)
    assert report["created"] == 2 and report["failed"] == 1
    assert report["errors"] == [
        {"row": 3, "field": "email", "value": "bob@example", "problem": "not an email address"}
    ]
    async with stack.store.session() as session:
        ada = await repo.require_customer(session, external_id=a)
        cy = await repo.require_customer(session, external_id=c)
        assert await repo.get_customer(session, external_id=b) is None
    assert repo.contact_of(ada, "phone") == "+14155552671"
    assert ada.attributes == {"plan": "pro", "region": "us-west"}
    assert cy.locale == "fr-FR" and cy.attributes == {"region": "eu-west"}

    # Re-import (fixed row, changed name): updates, never duplicates.
    csv_file.write_text(
        f"id,name,email\n{a},Ada Lovelace,ada@example.com\n{b},Bob,bob@example.com\n"
    )
    result = await run_cli(stack.settings, "customers", "import", str(csv_file))
    assert result.code == 0, result
    assert "1 new, 1 updated" in result.stderr
    async with stack.store.session() as session:
        ada = await repo.require_customer(session, external_id=a)
        count = await repo.count_customers(session)
        result2 = await run_cli(stack.settings, "customers", "import", str(csv_file))
        assert result2.code == 0
    async with stack.store.session() as session:
        assert await repo.count_customers(session) == count
    assert ada.name == "Ada Lovelace" and repo.contact_of(ada, "phone") == "+14155552671"


async def test_customers_import_jsonl(stack: Stack, tmp_path: Path) -> None:
    a = uid("jl")
    f = tmp_path / "c.jsonl"
    f.write_text(
        json.dumps({"id": a, "name": "J", "phone": "+447911123456", "attributes": {"tier": "gold"}})
        + "\n{not json}\n"
        + json.dumps({"id": uid("jl"), "fax": "123"})
        + "\n"
    )
    result = await run_cli(stack.settings, "customers", "import", str(f), "--json")
    assert result.code == 1
    report = json.loads(result.stdout)
    assert report["created"] == 1
    assert [(e["row"], e["field"]) for e in report["errors"]] == [(2, "line"), (3, "fax")]
    shown = await run_cli(stack.settings, "customers", "show", a, "--json")
    assert json.loads(shown.stdout)["attributes"] == {"tier": "gold"}


async def test_templates_publish_versions_and_refuses_bad_files(
    stack: Stack, tmp_path: Path
) -> None:
    name = uid("tpl")
    folder = tmp_path / "templates"
    folder.mkdir()
    path = folder / f"{name}.yaml"
    path.write_text(
        "purpose: service\nlocales:\n  en:\n    sms:\n      body: 'v1 {{ customer.name }}'\n"
    )
    first = await run_cli(stack.settings, "templates", "publish", str(folder), "--json")
    assert first.code == 0, first
    assert json.loads(first.stdout) == [{"name": name, "version": 1, "changed": True}]
    again = await run_cli(stack.settings, "templates", "publish", str(folder), "--json")
    assert json.loads(again.stdout) == [{"name": name, "version": 1, "changed": False}]
    path.write_text(
        "purpose: service\nlocales:\n  en:\n    sms:\n      body: 'v2 {{ customer.name }}'\n"
    )
    second = await run_cli(stack.settings, "templates", "publish", str(folder), "--json")
    assert json.loads(second.stdout) == [{"name": name, "version": 2, "changed": True}]
    listed = json.loads((await run_cli(stack.settings, "templates", "list", "--json")).stdout)
    assert {"name": name, "version": 2, "versions": 2} in [
        {k: t[k] for k in ("name", "version", "versions")} for t in listed
    ]

    path.write_text("purpose: gossip\nlocales:\n  en:\n    sms:\n      body: '{{ oops'\n")
    bad = await run_cli(stack.settings, "templates", "publish", str(folder))
    assert bad.code == 1
    assert f"{name}.yaml" in bad.stderr and "purpose" in bad.stderr and "gossip" in bad.stderr


async def test_send_and_audit_from_the_command_line(stack: Stack) -> None:
    from tests.conftest import POSTGRES_URL  # noqa: F401  (both backends run through here)

    target = stack.client.service_client.config.target_host
    settings = stack.settings.model_copy(update={"temporal_address": target})
    customer = await add_customer(stack.store)
    sent = await run_cli(
        settings,
        "send",
        "--customer",
        customer.external_id,
        "--template",
        "test-notice",
        "--context",
        '{"ref": "CLI-1"}',
        "--json",
    )
    assert sent.code == 0, sent
    outcome = json.loads(sent.stdout)
    assert outcome["status"] == "delivered" and outcome["channel"] == "email"
    assert len(stack.smtp.with_id(outcome["message_id"])) == 1

    suppressed = await run_cli(
        settings, "send", "--customer", customer.external_id, "--template", "spring-sale"
    )
    assert suppressed.code == 3, suppressed
    assert "suppressed" in suppressed.stdout and "no_opt_in" in suppressed.stdout

    granted = await run_cli(
        settings,
        "consent",
        "grant",
        customer.external_id,
        "--channel",
        "email",
        "--purpose",
        "marketing",
    )
    assert granted.code == 0, granted
    again = await run_cli(
        settings, "send", "--customer", customer.external_id, "--template", "spring-sale"
    )
    assert again.code == 0, again

    trail = await run_cli(settings, "audit", "--customer", customer.external_id, "--json")
    kinds = [e["kind"] for e in json.loads(trail.stdout)]
    assert kinds.count("delivered") == 2 and "consent_changed" in kinds
    assert ("suppressed", "no_opt_in") in [
        (e["kind"], e["reason"]) for e in json.loads(trail.stdout)
    ]


async def test_bad_input_is_refused_with_field_and_value(stack: Stack) -> None:
    bad_channel = await run_cli(
        stack.settings, "send", "--customer", "x", "--template", "t", "--channel", "sms,fax"
    )
    assert bad_channel.code == 2
    assert "--channel" in bad_channel.stderr and "'fax'" in bad_channel.stderr
    bad_context = await run_cli(
        stack.settings, "send", "--customer", "x", "--template", "t", "--context", "[1]"
    )
    assert bad_context.code == 2 and "--context" in bad_context.stderr
    missing = await run_cli(stack.settings, "customers", "import", "/no/such/file.csv")
    assert missing.code == 2 and "/no/such/file.csv" in missing.stderr
    unreachable = stack.settings.model_copy(update={"temporal_address": "127.0.0.1:1"})
    down = await run_cli(unreachable, "send", "--customer", "x", "--template", "t")
    assert down.code == 1 and "cannot reach Temporal at 127.0.0.1:1" in down.stderr


async def test_send_says_why_it_waits_when_no_worker_polls(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    import asyncio
    import sys

    from clarion.config import Settings
    from tests.support.processes import clean_environ, settings_env

    queue = uid("idle")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=tmp_path,
        task_queue=queue,
        temporal_address=temporal_env.client.service_client.config.target_host,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starters.cli",
        "send",
        "--customer",
        "c1",
        "--template",
        "welcome",
        env={**clean_environ(), **settings_env(settings)},
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert proc.stderr is not None
    try:
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
    finally:
        proc.kill()
        await proc.wait()
    assert f"is a worker polling task queue '{queue}'" in line, line


async def test_journeys_and_events_from_the_command_line(stack: Stack, tmp_path: Path) -> None:
    target = stack.client.service_client.config.target_host
    settings = stack.settings.model_copy(update={"temporal_address": target})
    name = uid("cli-j")
    joined = f"joined-{name}"  # an entry event no other test's journey listens to
    folder = tmp_path / "journeys"
    folder.mkdir()
    (folder / f"{name}.yaml").write_text(
        f"entry: {{events: [{joined}]}}\n"
        "exit_on: [left]\n"
        "steps:\n"
        "  hello: {send: {template: no-such-template}, next: nap}\n"
        "  nap: {wait: {duration: 1h}}\n"
    )
    refused = await run_cli(settings, "journeys", "publish", str(folder))
    assert refused.code == 1
    assert "steps.hello.send.template: unknown template 'no-such-template'" in refused.stderr

    (folder / f"{name}.yaml").write_text(
        f"entry: {{events: [{joined}]}}\n"
        "exit_on: [left]\n"
        "steps:\n"
        "  hello: {send: {template: test-notice, context: {ref: CLI}}, next: nap}\n"
        "  nap: {wait: {duration: 1h}}\n"
    )
    published = await run_cli(settings, "journeys", "publish", str(folder), "--json")
    assert json.loads(published.stdout) == [{"name": name, "version": 1, "changed": True}], (
        published
    )
    listed = json.loads((await run_cli(settings, "journeys", "list", "--json")).stdout)
    assert {"name": name, "entry_events": [joined]} in [
        {"name": j["name"], "entry_events": j["entry_events"]} for j in listed
    ]

    customer = await add_customer(stack.store)
    sent = await run_cli(
        settings,
        "events",
        "send",
        customer.external_id,
        joined,
        "--data",
        '{"via": "cli"}',
        "--json",
    )
    assert sent.code == 0, sent
    assert json.loads(sent.stdout)["started"] == [name]

    async def napping() -> bool:
        result = await run_cli(settings, "journeys", "status", customer.external_id, "--json")
        runs = [r for r in json.loads(result.stdout) if r["journey"] == name]
        return (
            bool(runs) and runs[0]["current_step"] == "nap" and bool(runs[0].get("waiting_until"))
        )

    from tests.support.processes import wait_until

    await wait_until(napping, within=60, what="the journey to nap")
    again = await run_cli(settings, "journeys", "start", name, customer.external_id)
    assert again.code == 1 and "already in" in again.stderr
    left = await run_cli(settings, "events", "send", customer.external_id, "left", "--json")
    assert name in json.loads(left.stdout)["delivered"]
    await stack.clarion.journey_handle(name, customer.external_id).result()
    status = json.loads(
        (await run_cli(settings, "journeys", "status", customer.external_id, "--json")).stdout
    )
    [run] = [r for r in status if r["journey"] == name]
    assert run["status"] == "exited" and run["reason"] == "exit_on event left"
    assert [s["step"] for s in run["steps"]] == ["hello", "nap"]

    bad = await run_cli(settings, "events", "send", customer.external_id, "x", "--data", "[]")
    assert bad.code == 2 and "--data" in bad.stderr
    schema = await run_cli(settings, "journeys", "schema")
    assert json.loads(schema.stdout)["title"] == "Clarion journey"


async def test_crisis_from_the_command_line(stack: Stack, tmp_path: Path) -> None:
    target = stack.client.service_client.config.target_host
    settings = stack.settings.model_copy(update={"temporal_address": target})
    region = uid("cli-r")
    ids = []
    for _ in range(3):
        c = await add_customer(stack.store)
        async with stack.store.transaction() as session:
            row = await repo.require_customer(session, external_id=c.external_id)
            row.attributes = {**row.attributes, "region": region}
        ids.append(c.external_id)
    tiers = tmp_path / "tiers.yaml"
    tiers.write_text("tiers:\n  - name: all\n    channels: [email]\n")

    bad = await run_cli(
        settings,
        "crisis",
        "launch",
        "--title",
        "x",
        "--template",
        "crisis-outage",
        "--segment",
        "event.x == 1",
    )
    assert bad.code == 2 and "segment" in bad.stderr and "event.x" in bad.stderr
    launched = await run_cli(
        settings, "crisis", "launch", "--title", "Outage", "--template", "crisis-outage",
        "--segment", f"region == '{region}'", "--tiers", str(tiers), "--follow", "--json",
    )  # fmt: skip
    assert launched.code == 0, launched
    report = json.loads(launched.stdout)
    broadcast_id = report["broadcast_id"]
    assert report["progress"]["done"] == 3 and report["progress"]["tiers"][0]["sent"] == 3
    status = json.loads(
        (await run_cli(settings, "crisis", "status", broadcast_id, "--json")).stdout
    )
    assert status["state"] == "active" and status["by_channel"] == {"email": 3}
    resolved = await run_cli(
        settings, "crisis", "resolve", broadcast_id, "--template", "crisis-resolved"
    )
    assert resolved.code == 0 and "generation 2" in resolved.stdout
    again = await run_cli(settings, "crisis", "update", broadcast_id, "--template", "crisis-update")
    assert again.code == 1  # refused: resolving, resolved, or already completed
    assert any(word in again.stderr for word in ("resolv", "completed")), again.stderr
    customers = tmp_path / "ids.txt"
    customers.write_text("\n".join(ids) + "\n")
    listed = await run_cli(
        settings, "crisis", "launch", "--title", "Outage", "--template", "crisis-outage",
        "--customers", str(customers), "--tiers", str(tiers), "--json",
    )  # fmt: skip
    assert listed.code == 0 and json.loads(listed.stdout)["broadcast_id"]


async def test_operators_add_prints_the_token_once_and_needs_an_admin(tmp_path: Path) -> None:
    from pydantic import SecretStr
    from sqlalchemy import select

    from clarion.config import Settings
    from clarion.store import Store
    from clarion.store.tables import Operator

    settings = Settings(_env_file=None, home=tmp_path)  # type: ignore[call-arg]
    first = await run_cli(settings, "operators", "add", "root", "--role", "admin", "--json")
    assert first.code == 0, first
    root = json.loads(first.stdout)
    assert root["roles"] == ["admin"] and root["token"].startswith("clr_")

    refused = await run_cli(settings, "operators", "add", "bob", "--role", "approver")
    assert refused.code == 3 and "only an admin" in refused.stderr, refused
    admin = settings.model_copy(update={"operator_token": SecretStr(root["token"])})
    bad = await run_cli(admin, "operators", "add", "bob", "--role", "wizard")
    assert bad.code == 2 and "'wizard'" in bad.stderr, bad
    added = await run_cli(
        admin, "operators", "add", "bob", "--role", "approver", "--role", "compliance"
    )
    assert added.code == 0, added
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("clr_")
    again = await run_cli(admin, "operators", "add", "bob", "--role", "approver")
    assert again.code == 2 and "exists already" in again.stderr

    listed = json.loads((await run_cli(settings, "operators", "list", "--json")).stdout)
    assert listed == [
        {"name": "bob", "roles": ["approver", "compliance"]},
        {"name": "root", "roles": ["admin"]},
    ]
    store = Store(settings.database_url)
    try:
        async with store.session() as session:
            rows = (await session.execute(select(Operator))).scalars().all()
    finally:
        await store.close()
    stored = " ".join(f"{r.name} {r.token_hash} {r.roles}" for r in rows)
    assert token not in stored and root["token"] not in stored  # only the hashes are kept


async def test_approvals_from_the_command_line(stack: Stack) -> None:
    from tests.conftest import operator_client

    target = stack.client.service_client.config.target_host
    requester = await operator_client(stack, "operator", "approver")
    approver = await operator_client(stack, "approver")
    customer = await add_customer(stack.store)
    handle = await requester.send_message(
        customer_id=customer.external_id, template="test-billing", context={"invoice": "C-1"}
    )
    for _ in range(100):
        if any(r.id == handle.message_id for r in await stack.clarion.approvals()):
            break
        await asyncio.sleep(0.1)
    as_requester = requester.settings.model_copy(update={"temporal_address": target})
    as_approver = approver.settings.model_copy(update={"temporal_address": target})

    listed = await run_cli(as_approver, "approvals", "list", "--json")
    assert listed.code == 0, listed
    [mine] = [r for r in json.loads(listed.stdout) if r["id"] == handle.message_id]
    assert mine["category"] == "billing" and mine["status"] == "pending" and mine["level"] == 0
    shown = await run_cli(as_approver, "approvals", "show", handle.message_id)
    assert shown.code == 0 and "Your invoice C-1" in shown.stdout, shown

    own = await run_cli(as_requester, "approvals", "approve", handle.message_id)
    assert own.code == 4 and "four-eyes" in own.stderr, own
    no_reason = await run_cli(as_approver, "approvals", "reject", handle.message_id, "--reason", "")
    assert no_reason.code == 4 and "needs a reason" in no_reason.stderr, no_reason
    unknown = await run_cli(as_approver, "approvals", "approve", "no-such-request")
    assert unknown.code == 1 and "no-such-request" in unknown.stderr, unknown
    ok = await run_cli(as_approver, "approvals", "approve", handle.message_id, "--reason", "ok")
    assert ok.code == 0 and "approved" in ok.stdout, ok
    outcome = await asyncio.wait_for(handle.result(), 30)
    assert outcome.status.value == "delivered"


async def test_bad_approval_policy_stops_the_worker_at_start(tmp_path: Path) -> None:
    from clarion.config import Settings

    policy = tmp_path / "approvals.yaml"
    policy.write_text(
        "categories:\n  billing:\n    ladder:\n      - {roles: [approver], after: soon}\n"
    )
    settings = Settings(_env_file=None, home=tmp_path, approval_policy_file=policy)  # type: ignore[call-arg]
    result = await run_cli(settings, "worker", within=60)
    assert result.code == 2, result
    assert "CLARION_APPROVAL_POLICY_FILE" in result.stderr and "'soon'" in result.stderr


async def test_consent_inbound_sms_from_the_command_line(stack: Stack) -> None:
    from tests.conftest import unique_phone

    phone = unique_phone()
    customer = await add_customer(stack.store, phone=phone)
    stop = await run_cli(stack.settings, "consent", "inbound-sms", phone, "stop", "--json")
    assert stop.code == 0, stop
    result = json.loads(stop.stdout)
    assert result["action"] == "opt_out" and result["customers"] == [customer.external_id]
    assert "unsubscribed" in result["reply"]
    helped = await run_cli(stack.settings, "consent", "inbound-sms", phone, "HELP")
    assert helped.code == 0 and "Reply STOP" in helped.stdout, helped
    bad = await run_cli(stack.settings, "consent", "inbound-sms", "12", "STOP")
    assert bad.code == 2 and "'12'" in bad.stderr, bad


async def test_consent_unsubscribe_token_from_the_command_line(stack: Stack) -> None:
    from datetime import timedelta

    from pydantic import SecretStr

    from clarion.models import Channel, Purpose
    from clarion.store.tables import utcnow
    from clarion.unsubscribe import UnsubscribeClaim, make_unsubscribe_token

    settings = stack.settings.model_copy(update={"unsubscribe_secret": SecretStr("cli-secret")})
    customer = await add_customer(stack.store)
    claim = UnsubscribeClaim(customer.external_id, Channel.EMAIL, Purpose.MARKETING, "m-cli")
    token = make_unsubscribe_token("cli-secret", claim, utcnow() + timedelta(days=1))
    done = await run_cli(settings, "consent", "unsubscribe", token)
    assert done.code == 0 and "opted out of marketing email" in done.stdout, done
    bad = await run_cli(settings, "consent", "unsubscribe", token + "x")
    assert bad.code == 2 and "signature" in bad.stderr, bad


# Processes, HTTP and the browser over a store: SQLite is enough (see conftest.py).
pytestmark = pytest.mark.sqlite_only


async def test_alerts_from_the_command_line(stack: Stack, tmp_path: Path) -> None:
    target = stack.client.service_client.config.target_host
    settings = stack.settings.model_copy(update={"temporal_address": target})
    key = f"cli.{uid('k')}"
    bad = await run_cli(
        settings, "alerts", "ingest", "--source", "m", "--key", key, "--severity", "loud"
    )
    assert bad.code == 2 and "severity='loud'" in bad.stderr, bad
    bad = await run_cli(
        settings, "alerts", "ingest", "--source", "m", "--key", key, "--severity", "major",
        "--affects", "region ==",
    )  # fmt: skip
    assert bad.code == 2 and "affects=" in bad.stderr, bad
    taken = await run_cli(
        settings, "alerts", "ingest", "--source", "m", "--key", key, "--severity", "critical",
        "--summary", "Payments down", "--json",
    )  # fmt: skip
    assert taken.code == 0, taken
    assert json.loads(taken.stdout) == {"key": key, "workflow_id": f"alert:{key}", "note": ""}

    async def listed() -> list[dict[str, object]]:
        result = await run_cli(settings, "alerts", "incidents", "--key", key, "--json")
        assert result.code == 0, result
        found: list[dict[str, object]] = json.loads(result.stdout)
        return found if found and found[0]["status"] == "unmapped" else []

    found: list[dict[str, object]] = []
    for _ in range(60):
        found = await listed()
        if found:
            break
        await asyncio.sleep(0.5)
    assert found and found[0]["summary"] == "Payments down", found
    shown = await run_cli(settings, "alerts", "show", str(found[0]["incident_id"]))
    assert shown.code == 0 and "status: unmapped" in shown.stdout, shown
    missing = await run_cli(settings, "alerts", "show", "inc-none")
    assert missing.code == 1 and "unknown incident" in missing.stderr, missing
    gone = await run_cli(
        settings, "alerts", "ingest", "--source", "m", "--key", f"{key}-x", "--severity", "ok"
    )
    assert gone.code == 0 and "no open incident" in gone.stdout, gone
