"""The ``clarion`` command line.

Exit status: 0 success; 1 failure (a bad row, an undeliverable message, an unreachable
server); 2 bad usage (unknown option or value); 3 a message suppressed by policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from clarion.config import Settings, get_settings
from clarion.customers import parse_csv, parse_jsonl
from clarion.errors import ClarionError, TemplateError, ValidationFailed
from clarion.logging import configure_logging
from clarion.models import (
    Channel,
    ConsentStatus,
    DeliveryOutcome,
    OutcomeStatus,
    Purpose,
)
from clarion.store import Store, repo
from clarion.templates import load_template_dir

T = TypeVar("T")

app = typer.Typer(
    name="clarion",
    help="Clarion: durable customer communications on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
customers_app = typer.Typer(help="Import and inspect customers.", no_args_is_help=True)
templates_app = typer.Typer(help="Publish and list message templates.", no_args_is_help=True)
consent_app = typer.Typer(help="Record consent in the ledger.", no_args_is_help=True)
report_app = typer.Typer(
    help="Measurement: delivery analytics, journey funnels and A/B results.",
    no_args_is_help=True,
)
retention_app = typer.Typer(
    help="Purge message bodies and delivery details past their retention.", no_args_is_help=True
)
db_app = typer.Typer(help="Clarion's store.", no_args_is_help=True)
journeys_app = typer.Typer(
    help="Publish, start and follow customer journeys.", no_args_is_help=True
)
events_app = typer.Typer(help="Feed customer events to journeys.", no_args_is_help=True)
crisis_app = typer.Typer(
    help="Crisis broadcasts: launch, follow, update, resolve.", no_args_is_help=True
)
app.add_typer(customers_app, name="customers")
app.add_typer(templates_app, name="templates")
app.add_typer(consent_app, name="consent")
app.add_typer(db_app, name="db")
app.add_typer(retention_app, name="retention")
app.add_typer(report_app, name="report")
app.add_typer(journeys_app, name="journeys")
app.add_typer(events_app, name="events")
app.add_typer(crisis_app, name="crisis")
operators_app = typer.Typer(help="Operators, their roles and API tokens.", no_args_is_help=True)
approvals_app = typer.Typer(
    help="Messages waiting for a human decision: list, show, approve, reject.",
    no_args_is_help=True,
)
app.add_typer(operators_app, name="operators")
app.add_typer(approvals_app, name="approvals")
keys_app = typer.Typer(
    help="Keys that encrypt what Clarion writes to Temporal (CLARION_PAYLOAD_KEYS).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")
audit_app = typer.Typer()
app.add_typer(audit_app, name="audit")
alerts_app = typer.Typer(
    help="Alerts from operations systems, and the incidents they open.", no_args_is_help=True
)
app.add_typer(alerts_app, name="alerts")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


class Fail(Exception):
    """A failure already explained to the user; carries the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _setting_problem(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    loc = "_".join(str(p) for p in error["loc"]).upper()
    name = f"CLARION_{loc}"
    return message if not loc or message.startswith(name) else f"{name}: {message}"


def settings() -> Settings:
    try:
        s = get_settings()
    except ValidationError as exc:
        problems = "; ".join(_setting_problem(e) for e in exc.errors())
        raise Fail(f"invalid configuration: {problems}", 2) from exc
    if s.approval_policy_file is not None:
        from clarion.policy.approval import PolicyError, load_policy

        try:
            load_policy(s.approval_policy_file)
        except PolicyError as exc:
            raise Fail(f"invalid configuration: CLARION_APPROVAL_POLICY_FILE: {exc}", 2) from exc
    if s.compliance_file is not None:
        from clarion.policy.compliance import ComplianceError, load_compliance

        try:
            load_compliance(s.compliance_file)
        except ComplianceError as exc:
            raise Fail(f"invalid configuration: CLARION_COMPLIANCE_FILE: {exc}", 2) from exc
    if s.alerts_file is not None:
        from clarion.policy.alerts import AlertRulesError, load_rules

        try:
            load_rules(s.alerts_file)
        except AlertRulesError as exc:
            raise Fail(f"invalid configuration: CLARION_ALERTS_FILE: {exc}", 2) from exc
    configure_logging(s.log_level, s.log_format)
    return s


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


async def with_store(s: Settings, fn: Callable[[Store], Awaitable[T]]) -> T:
    store = Store(s.database_url)
    try:
        if s.auto_migrate:
            await store.migrate()
        return await fn(store)
    finally:
        await store.close()


async def temporal_client(s: Settings) -> Any:
    from clarion.codec import PayloadKeyConfigError
    from clarion.temporal import connect

    try:
        return await connect(s)
    except PayloadKeyConfigError as exc:  # a hand-edited <home>/payload.key
        raise Fail(f"invalid configuration: {exc}", 2) from exc
    except Exception as exc:
        raise Fail(
            f"cannot reach Temporal at {s.temporal_address} "
            f"(namespace {s.temporal_namespace}): {exc}. "
            "Is `clarion dev` running, or CLARION_TEMPORAL_ADDRESS set?"
        ) from exc


# ------------------------------------------------------------------ processes


@app.command()
def worker() -> None:
    """Run a worker: Clarion's workflows and activities on CLARION_TASK_QUEUE."""
    from workers.main import run_worker

    s = settings()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        client = await temporal_client(s)
        await run_worker(s, stop=stop, client=client)

    run(main())


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    openapi: Annotated[
        bool, typer.Option("--openapi", help="Print the OpenAPI spec (JSON) and exit.")
    ] = False,
) -> None:
    """Serve the HTTP API (operator tokens; see docs/api.md)."""
    import uvicorn

    from starters.api import create_app

    s = settings()
    app_ = create_app(s)
    if openapi:
        sys.stdout.write(json.dumps(app_.openapi(), indent=2, sort_keys=True) + "\n")
        return

    async def main() -> None:
        client = await temporal_client(s)
        app_.state.temporal = client
        server = uvicorn.Server(
            uvicorn.Config(app_, host=host, port=port, log_config=None, lifespan="on")
        )
        await server.serve()

    run(main())


@app.command()
def dev(
    demo: Annotated[
        bool, typer.Option("--demo", help="Seed examples and send a few messages.")
    ] = False,
    ui_port: Annotated[int, typer.Option(help="Port of the Temporal Web UI.")] = 8233,
    codec_port: Annotated[
        int,
        typer.Option(
            min=0, max=65535, help="Port of the codec server that decrypts for the UI (0: none)."
        ),
    ] = 8081,
    api_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port of the HTTP API on loopback (0: none).")
    ] = 8000,
    examples: Annotated[Path | None, typer.Option(help="Examples folder for --demo.")] = None,
    exit_after_demo: Annotated[bool, typer.Option(help="Stop once the demo has run.")] = False,
) -> None:
    """Everything on one machine: Temporal dev server, migrations, worker. Ctrl-C stops it all."""
    from starters.dev import run_dev

    s = settings()
    run(
        run_dev(
            s,
            demo=demo,
            ui_port=ui_port,
            codec_port=codec_port,
            api_port=api_port,
            examples=examples,
            exit_after_demo=exit_after_demo,
        )
    )


@app.command()
def demo(
    examples: Annotated[Path | None, typer.Option(help="Examples folder.")] = None,
) -> None:
    """Seed the examples and send a few messages through a running Clarion (`clarion dev`)."""
    from starters.demo import run_demo

    s = settings()

    async def main() -> None:
        client = await temporal_client(s)
        await run_demo(s, client, examples=examples, console=out)

    run(main())


@app.command("codec-server")
def codec_server(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8081,
    origin: Annotated[
        list[str] | None,
        typer.Option(
            "--origin",
            help="Temporal UI origin allowed to call it (repeatable). "
            "Default: http://localhost:8233",
        ),
    ] = None,
) -> None:
    """Decrypt payloads for the Temporal UI and CLI (Temporal's remote codec protocol).

    Anyone who reaches it can decrypt what it is sent: keep it on loopback, or behind
    authentication (CLARION_CODEC_SERVER_TOKEN, your proxy)."""
    from clarion.codec import PayloadKeyConfigError, keyring_for
    from clarion.temporal import EncryptionCodec
    from starters.codec_server import DEFAULT_ORIGIN, serve_codec

    s = settings()
    origins = origin or [DEFAULT_ORIGIN]
    token = s.codec_server_token.get_secret_value()
    try:
        keyring = keyring_for(s)
    except (PayloadKeyConfigError, OSError) as exc:
        raise Fail(f"invalid configuration: {exc}", 2) from exc
    if not token and host not in ("127.0.0.1", "localhost", "::1"):
        err.print(
            f"[yellow]warning:[/yellow] listening on {host} without CLARION_CODEC_SERVER_TOKEN: "
            "anyone who reaches it can decrypt payloads",
            highlight=False,
        )

    def ready(bound: int) -> None:
        err.print(
            f"codec server on http://{host}:{bound} for {', '.join(origins)} "
            f"(keys {', '.join(keyring.ids)}, active {keyring.active_id}; "
            f"token {'required' if token else 'not required'}). Ctrl-C stops it.",
            highlight=False,
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await serve_codec(
                EncryptionCodec(keyring),
                host=host,
                port=port,
                origins=origins,
                token=token,
                stop=stop,
                ready=ready,
            )
        except OSError as exc:
            raise Fail(f"cannot listen on {host}:{port}: {exc}") from exc

    run(main())


@keys_app.command("generate")
def keys_generate(
    key_id: Annotated[
        str | None, typer.Option("--id", help="Key id. Default: k<yyyymmdd>-<random>")
    ] = None,
) -> None:
    """Print a new key entry (id:base64) for CLARION_PAYLOAD_KEYS."""
    from clarion.codec import PayloadKeyConfigError, generate_key_line

    try:
        line = generate_key_line(key_id)
    except PayloadKeyConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--id") from exc
    sys.stdout.write(line + "\n")
    err.print(
        "Put it first in CLARION_PAYLOAD_KEYS (it becomes the active key) and keep the old "
        "keys listed after it, so histories written with them still decrypt.",
        highlight=False,
    )


@keys_app.command("show")
def keys_show(as_json: JsonOpt = False) -> None:
    """The configured key ids and the active one (never the keys themselves)."""
    from clarion.codec import PayloadKeyConfigError, keyring_for, local_key_path

    s = settings()
    try:
        keyring = keyring_for(s)
    except (PayloadKeyConfigError, OSError) as exc:
        raise Fail(f"invalid configuration: {exc}", 2) from exc
    source = (
        "CLARION_PAYLOAD_KEYS"
        if s.payload_keys.get_secret_value().strip()
        else str(local_key_path(s.home))
    )
    if as_json:
        print_json({"active": keyring.active_id, "ids": keyring.ids, "source": source})
        return
    out.print(f"active: {keyring.active_id}", highlight=False)
    out.print(f"keys:   {', '.join(keyring.ids)}", highlight=False)
    out.print(f"from:   {source}", highlight=False)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the store's migrations (Alembic) up to the latest."""
    s = settings()

    async def main(store: Store) -> int:
        from clarion.store import audit as chain

        await store.migrate()
        # Events written before the audit chain existed join it now.
        return await chain.seal_all(store)

    sealed = run(with_store(s.model_copy(update={"auto_migrate": False}), main))
    if sealed:
        err.print(f"{sealed} earlier audit events sealed into the audit chain")
    err.print(f"store is up to date: {_safe_url(s.database_url)}")


def print_published(results: list[repo.PublishResult], *, as_json: bool) -> None:
    if as_json:
        print_json([{"name": r.name, "version": r.version, "changed": r.changed} for r in results])
        return
    for r in results:
        out.print(f"{r.name}: v{r.version} {'published' if r.changed else 'unchanged'}")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# ------------------------------------------------------------------ customers


@customers_app.command("import")
def customers_import(
    file: Annotated[
        Path, typer.Argument(help="CSV (header: id,name,email,phone,locale,timezone,...) or .jsonl")
    ],
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv or jsonl (default: by extension)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Import customers; bad rows are reported, good rows still imported (upsert by id)."""
    s = settings()
    if not file.is_file():
        raise Fail(f"file: {str(file)!r}: no such file", 2)
    kind = (fmt or ("jsonl" if file.suffix.lower() in (".jsonl", ".ndjson") else "csv")).lower()
    if kind not in ("csv", "jsonl"):
        raise Fail(f"--format: {kind!r}: use csv or jsonl", 2)
    text = file.read_text(encoding="utf-8-sig")
    parsed = (parse_csv if kind == "csv" else parse_jsonl)(
        text, default_region=s.default_phone_region
    )

    async def main(store: Store) -> tuple[int, int]:
        created = updated = 0
        async with store.transaction() as session:
            for _, record in parsed.records:
                _, was_created = await repo.upsert_customer(session, record=record)
                created += was_created
                updated += not was_created
        return created, updated

    created, updated = run(with_store(s, main))
    if as_json:
        print_json(
            {
                "created": created,
                "updated": updated,
                "failed": len(parsed.errors),
                "errors": [e.__dict__ for e in parsed.errors],
            }
        )
    else:
        for e in parsed.errors:
            err.print(f"[red]{file}: {e}[/red]", highlight=False)
        err.print(
            f"imported {created + updated} customers ({created} new, {updated} updated), "
            f"{len(parsed.errors)} rows failed"
        )
    if parsed.errors:
        raise typer.Exit(1)


REPORT_COLUMNS = [
    "attempted", "sent", "failed", "suppressed", "deferred", "sending",
    "delivered", "fell_back", "acknowledged", "opted_out_after",
    "median_time_to_send_s", "p95_time_to_send_s",
    "median_time_to_deliver_s", "p95_time_to_deliver_s",
    "cost", "cost_per_sent", "cost_per_delivered", "cost_per_acknowledged",
]  # fmt: skip


@report_app.command("deliveries")
def report_deliveries(
    since: Annotated[str, typer.Option("--since", help="7d, 24h or an ISO-8601 time")] = "7d",
    until: Annotated[
        str | None, typer.Option("--until", help="Default: now (same forms as --since)")
    ] = None,
    by: Annotated[
        str,
        typer.Option(
            "--by",
            help="Comma-separated: template,version,channel,purpose,journey,segment,day",
        ),
    ] = "template,channel",
    as_json: JsonOpt = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV for spreadsheets.")] = False,
) -> None:
    """Delivery analytics per group: attempted, sent, delivered, failed and suppressed (by
    reason), fell back, acknowledged, opted out after; time to send and to deliver (median,
    p95); cost, per message and per outcome. See docs/measurement.md."""
    from clarion.store.reports import delivery_report, resolve_time

    s = settings()
    now = datetime.now(UTC)
    try:
        start = resolve_time(since, "since", now)
        end = resolve_time(until, "until", now) if until else now
    except ValidationFailed as exc:
        raise Fail(f"--{exc.field}: {exc.value!r}: {exc.problem}", 2) from exc
    dims = [d.strip() for d in by.split(",") if d.strip()]
    prices = {"email": s.price_email, "sms": s.price_sms, "voice": s.price_voice}

    async def main(store: Store) -> list[dict[str, Any]]:
        async with store.session() as session:
            return await delivery_report(session, since=start, until=end, by=dims, prices=prices)

    try:
        rows = run(with_store(s, main))
    except ValidationFailed as exc:
        raise Fail(f"--{exc.field}: {exc.value!r}: {exc.problem}", 2) from exc
    if as_json:
        print_json({"since": start.isoformat(), "until": end.isoformat(), "groups": rows})
        return
    columns = [*dims, *REPORT_COLUMNS]
    if as_csv:
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow([*columns, "failed_by_reason", "suppressed_by_reason"])
        for row in rows:
            writer.writerow(
                [
                    *("" if row.get(c) is None else row.get(c) for c in columns),
                    json.dumps(row["failed_by_reason"], sort_keys=True),
                    json.dumps(row["suppressed_by_reason"], sort_keys=True),
                ]
            )
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*("-" if row.get(c) is None else str(row.get(c)) for c in columns))
    out.print(table)


@report_app.command("refresh")
def report_refresh(as_json: JsonOpt = False) -> None:
    """Bring the rollup of the delivery reports up to date now (reports do it too)."""
    from clarion.store.reports import refresh_rollup

    async def main(store: Store) -> dict[str, Any]:
        async with store.transaction() as session:
            result = await refresh_rollup(session)
        return {"days": result.days, "rows": result.rows, "rolled_until": result.rolled_until}

    result = run(with_store(settings(), main))
    if as_json:
        print_json(result)
        return
    days = result["days"]
    span = f" ({days[0]} .. {days[-1]})" if days else ""
    err.print(
        f"{len(days)} days recomputed{span}, {result['rows']} rollup rows; "
        f"every day before {result['rolled_until']} is rolled up"
    )


@report_app.command("journey")
def report_journey(
    journey: str,
    version: Annotated[int | None, typer.Option("--version", min=1, help="One version")] = None,
    alpha: Annotated[float, typer.Option(min=0.001, max=0.5, help="Significance level")] = 0.05,
    min_per_variant: Annotated[
        int, typer.Option(min=1, help="Customers per variant before deciding")
    ] = 100,
    as_json: JsonOpt = False,
) -> None:
    """A journey's funnel (customers per step, exits, conversions, time in each step) and
    the A/B results of its splits."""
    from clarion.store.funnels import journey_funnel

    s = settings()

    async def main(store: Store) -> dict[str, Any]:
        async with store.session() as session:
            return await journey_funnel(
                session,
                journey=journey,
                version=version,
                alpha=alpha,
                min_per_variant=min_per_variant,
            )

    try:
        data = run(with_store(s, main))
    except ClarionError as exc:
        raise Fail(str(exc), 1) from exc
    if as_json:
        print_json(data)
        return
    rate = data["conversion_rate"]
    out.print(
        f"[bold]{journey}[/bold]{f' v{version}' if version else ''}: {data['entered']} entered, "
        f"{data['converted']} converted ({'-' if rate is None else f'{rate:.1%}'})",
        highlight=False,
    )
    table = Table("step", "customers", "of entered", "median time in step")
    for step in data["steps"]:
        spent = step["median_time_in_step_s"]
        table.add_row(
            step["step"],
            str(step["customers"]),
            f"{step['share_of_entered']:.1%}",
            "-" if spent is None else f"{spent:.1f} s",
        )
    out.print(table)
    for event, count in data["exits_by_event"].items():
        out.print(f"exited on {event}: {count}", highlight=False)
    for test in data["ab_tests"]:
        for variant in test["variants"]:
            out.print(
                f"split {test['step']} {variant['variant']}: {variant['customers']} customers, "
                f"{variant['converted']} converted ({variant['conversion_rate']:.1%})",
                highlight=False,
            )
        for c in test["comparisons"]:
            out.print(f"  {c['variant']} vs {c['control']}: {c['explanation']}", highlight=False)


@retention_app.command("run")
def retention_run(
    days: Annotated[
        int | None, typer.Option("--days", help="Purge what is older (default: the setting)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the retention purge now (the schedule runs it daily) and print what it purged."""
    import uuid

    from clarion.models import RetentionInput
    from workflows.retention import RetentionWorkflow

    s = settings()
    chosen = days if days is not None else s.retention_days
    if chosen < 1:
        raise Fail(f"--days: {chosen!r}: must be at least 1", 2)

    async def main() -> Any:
        client = await temporal_client(s)
        return await client.execute_workflow(
            RetentionWorkflow.run,
            RetentionInput(days=chosen),
            id=f"{s.task_queue}-retention-manual-{uuid.uuid4().hex[:8]}",
            task_queue=s.task_queue,
        )

    report = run(main())
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    out.print(f"purged what is older than {report.cutoff.isoformat()}")
    for table, count in sorted(report.rows.items()):
        out.print(f"  {table}: {count}", highlight=False)


@customers_app.command("erase")
def customers_erase(
    customer_id: Annotated[str, typer.Argument(help="Customer id")],
    reference: Annotated[
        str, typer.Option("--reference", help="The data-subject request's reference")
    ] = "",
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="Idempotency key (default: new)")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the receipt")] = False,
    sweep_after: Annotated[
        str, typer.Option("--sweep-after", help="When the second pass runs")
    ] = "5m",
    as_json: JsonOpt = False,
) -> None:
    """Erase a customer (right to be forgotten): end their journeys, delete or anonymise
    their personal data everywhere, keep a tombstone, and produce a receipt."""
    from clarion.policy.timing import DurationError, parse_duration

    try:
        parse_duration(sweep_after)
    except DurationError as exc:
        raise Fail(f"--sweep-after: {exc}", 2) from exc

    async def call(clarion: Any) -> dict[str, Any]:
        handle = await clarion.erase_customer(
            customer_id, reference=reference, request_id=request_id, sweep_after=sweep_after
        )
        if not wait:
            return {"request_id": handle.request_id, "status": "running"}
        receipt = await handle.result()
        return {"request_id": handle.request_id, "status": "done", "receipt": receipt}

    data = _approvals_call(call, temporal=True)
    if as_json:
        receipt = data.get("receipt")
        print_json({**data, **({"receipt": receipt.model_dump(mode="json")} if receipt else {})})
        return
    out.print(f"erasure {data['request_id']}: {data['status']}")
    if "receipt" in data:
        _print_receipt(data["receipt"].model_dump(mode="json"))


def _print_receipt(receipt: dict[str, Any]) -> None:
    for key in (
        "customer_ref",
        "reference",
        "requested_by",
        "requested_at",
        "completed_at",
        "customer_found",
        "journeys_ended",
        "messages_cancelled",
    ):
        out.print(f"{key}: {receipt.get(key)}", highlight=False)
    for table, count in sorted((receipt.get("rows") or {}).items()):
        out.print(f"  {table}: {count}", highlight=False)


@customers_app.command("erasure")
def customers_erasure(
    request_id: Annotated[str, typer.Argument(help="The erasure request id")],
    as_json: JsonOpt = False,
) -> None:
    """Status, progress and receipt of an erasure request."""

    async def call(clarion: Any) -> dict[str, Any]:
        record: dict[str, Any] = await clarion.erasure_record(request_id)
        if record["status"] != "done":
            try:
                progress = await clarion.get_erasure(request_id).progress()
            except Exception:  # the workflow may be gone from Temporal's retention
                progress = None
            if progress is not None:
                record["progress"] = progress.model_dump(mode="json")
        return record

    data = _approvals_call(call, temporal=True)
    if as_json:
        print_json(data)
        return
    out.print(f"erasure {data['request_id']}: {data['status']}")
    if "progress" in data:
        out.print(f"stage: {data['progress']['stage']}", highlight=False)
    if data["receipt"]:
        _print_receipt(data["receipt"])


@customers_app.command("show")
def customers_show(
    customer_id: Annotated[str, typer.Argument(help="Customer id")], as_json: JsonOpt = False
) -> None:
    """A customer with contact points and consent ledger."""
    s = settings()

    async def main(store: Store) -> dict[str, Any]:
        async with store.session() as session:
            customer = await repo.require_customer(session, external_id=customer_id)
            facts = await repo.consent_facts(session, customer=customer)
            return {
                "id": customer.external_id,
                "name": customer.name,
                "locale": customer.locale,
                "timezone": customer.timezone,
                "email": repo.contact_of(customer, "email"),
                "phone": repo.contact_of(customer, "phone"),
                "attributes": customer.attributes,
                "consent": [f.model_dump(mode="json") for f in facts],
            }

    data = run(with_store(s, main))
    if as_json:
        print_json(data)
        return
    for key in ("id", "name", "locale", "timezone", "email", "phone", "attributes"):
        out.print(f"[bold]{key}[/bold]: {data[key]}", highlight=False)
    for fact in data["consent"]:
        out.print(
            f"consent: {fact['channel']}/{fact['purpose']} {fact['status']} "
            f"({fact['source']}, {fact['recorded_at']})"
        )


# ------------------------------------------------------------------ consent


def _consent(
    customer_id: str,
    channel: Channel,
    purpose: Purpose,
    status: ConsentStatus,
    source: str,
    jurisdiction: str | None = None,
) -> None:
    s = settings()

    async def main(store: Store) -> None:
        async with store.transaction() as session:
            customer = await repo.require_customer(session, external_id=customer_id)
            await repo.change_consent(
                session,
                customer=customer,
                channel=channel,
                purpose=purpose,
                status=status,
                source=source,
                actor=source,
                jurisdiction=jurisdiction,
            )

    run(with_store(s, main))
    err.print(f"{customer_id}: {channel.value}/{purpose.value} {status.value}")


ChannelOpt = Annotated[Channel, typer.Option("--channel", case_sensitive=False)]
PurposeOpt = Annotated[Purpose, typer.Option("--purpose", case_sensitive=False)]
SourceOpt = Annotated[str, typer.Option("--source", help="Where the consent came from.")]
JurisdictionOpt = Annotated[
    str | None,
    typer.Option("--jurisdiction", help="Where it was given (default: the customer's)"),
]


@consent_app.command("grant")
def consent_grant(
    customer_id: str,
    channel: ChannelOpt,
    purpose: PurposeOpt,
    source: SourceOpt = "cli",
    jurisdiction: JurisdictionOpt = None,
) -> None:
    """Record an opt-in."""
    _consent(customer_id, channel, purpose, ConsentStatus.GRANTED, source, jurisdiction)


@consent_app.command("revoke")
def consent_revoke(
    customer_id: str,
    channel: ChannelOpt,
    purpose: PurposeOpt,
    source: SourceOpt = "cli",
    jurisdiction: JurisdictionOpt = None,
) -> None:
    """Record an opt-out."""
    _consent(customer_id, channel, purpose, ConsentStatus.REVOKED, source, jurisdiction)


# ------------------------------------------------------------------ templates


@templates_app.command("publish")
def templates_publish(
    directory: Annotated[Path, typer.Argument(help="Folder of template files (*.yaml)")],
    as_json: JsonOpt = False,
) -> None:
    """Publish every template in DIR; changed ones get a new immutable version."""
    s = settings()
    try:
        definitions = load_template_dir(directory)
    except TemplateError as exc:
        raise Fail(str(exc)) from exc

    async def main(store: Store) -> list[repo.PublishResult]:
        async with store.transaction() as session:
            return [await repo.publish_template(session, definition=d) for d in definitions]

    print_published(run(with_store(s, main)), as_json=as_json)


@templates_app.command("list")
def templates_list(as_json: JsonOpt = False) -> None:
    """Templates with their latest version."""
    s = settings()

    async def main(store: Store) -> list[dict[str, Any]]:
        async with store.session() as session:
            rows = []
            for t in await repo.list_templates(session):
                latest = t.versions[-1]
                rows.append(
                    {
                        "name": t.name,
                        "version": latest.version,
                        "versions": len(t.versions),
                        "purpose": latest.purpose,
                        "category": latest.category,
                        "status": latest.status,
                        "locales": sorted(latest.content.get("locales", {})),
                        "published_at": latest.published_at.isoformat(),
                    }
                )
            return rows

    rows = run(with_store(s, main))
    if as_json:
        print_json(rows)
        return
    table = Table("name", "version", "purpose", "category", "locales", "published")
    for r in rows:
        table.add_row(
            r["name"],
            f"v{r['version']}",
            r["purpose"],
            r["category"],
            ",".join(r["locales"]),
            r["published_at"][:19],
        )
    out.print(table)


# ------------------------------------------------------------------ send and audit


def parse_channels(value: str) -> list[Channel]:
    hint = "'--channel'"
    channels: list[Channel] = []
    for part in filter(None, (p.strip().lower() for p in value.split(","))):
        try:
            channels.append(Channel(part))
        except ValueError:
            names = ", ".join(c.value for c in Channel)
            raise typer.BadParameter(
                f"{part!r} is not a channel (use {names})", param_hint=hint
            ) from None
    if not channels:
        raise typer.BadParameter("at least one channel", param_hint=hint)
    if len(set(channels)) != len(channels):
        raise typer.BadParameter(f"{value!r}: each channel at most once", param_hint=hint)
    return channels


def parse_context(value: str) -> dict[str, Any]:
    return parse_json_object(value, "--context")


def _check_data(value: str) -> str:
    parse_json_object(value, "--data")
    return value


def parse_json_object(value: str, option: str) -> dict[str, Any]:
    hint = f"'{option}'"
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(
            f"{value!r} is not JSON: {exc.msg} at column {exc.colno}", param_hint=hint
        ) from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{value!r} must be a JSON object", param_hint=hint)
    return data


def _check_channels(value: str) -> str:
    parse_channels(value)
    return value


def _check_context(value: str) -> str:
    parse_context(value)
    return value


class PurposeChoice(StrEnum):
    transactional = "transactional"
    service = "service"
    marketing = "marketing"


def outcome_exit_code(outcome: DeliveryOutcome) -> int:
    return {OutcomeStatus.DELIVERED: 0, OutcomeStatus.FAILED: 1, OutcomeStatus.SUPPRESSED: 3}[
        outcome.status
    ]


async def wait_with_hints(handle: Any, s: Settings, every: float = 10.0) -> DeliveryOutcome:
    """Wait for the outcome; every ``every`` seconds, say on stderr why it is taking long."""
    result = asyncio.ensure_future(handle.result())
    while True:
        done, _ = await asyncio.wait({result}, timeout=every)
        if done:
            return result.result()
        err.print(
            f"message {handle.message_id}: {await waiting_reason(handle, s)}", highlight=False
        )


async def waiting_reason(handle: Any, s: Settings) -> str:
    try:
        description = await handle._handle.describe()
    except Exception as exc:
        return f"still waiting ({exc})"
    pending = description.raw_description.pending_activities
    if description.raw_description.pending_children:
        with contextlib.suppress(Exception):
            if await handle.stage() == "awaiting_approval":
                return (
                    "waiting for approval: `clarion approvals show "
                    f"{handle.message_id}`. Ctrl-C stops waiting; the message goes on."
                )
    for activity in pending:
        if activity.attempt > 1 and activity.last_failure.message:
            return (
                f"{activity.activity_type.name} attempt {activity.attempt}, "
                f"retrying after: {activity.last_failure.message}"
            )
    if not pending and description.raw_description.pending_workflow_task.ByteSize():
        return (
            f"still waiting: is a worker polling task queue {s.task_queue!r}? "
            "(`clarion dev` or `clarion worker`). Ctrl-C stops waiting; the message goes on."
        )
    return "still in progress"


@app.command()
def send(
    customer: Annotated[str, typer.Option("--customer", help="Customer id")],
    template: Annotated[str, typer.Option("--template", help="Template name")],
    purpose: Annotated[
        PurposeChoice | None, typer.Option("--purpose", help="Default: the template's")
    ] = None,
    channel: Annotated[
        str, typer.Option("--channel", help="Fallback ladder, e.g. sms,email")
    ] = "email",
    context: Annotated[
        str, typer.Option("--context", help="Template variables as a JSON object")
    ] = "{}",
    message_id: Annotated[str | None, typer.Option("--message-id", help="Idempotency key")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the outcome")] = True,
    ack_within: Annotated[
        str | None,
        typer.Option(
            "--ack-within",
            help="Ask for an acknowledgement (e.g. 15m); without one, the next channel of "
            "the ladder is tried, and after the last a human agent gets a task",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Send one message (a DeliverMessage workflow) and print its outcome."""
    channels = parse_channels(channel)
    ctx = parse_context(context)
    if ack_within is not None:
        from clarion.policy.timing import parse_duration

        try:
            parse_duration(ack_within)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--ack-within") from exc
    s = settings()
    from starters.sdk import ClarionClient

    async def main() -> DeliveryOutcome | None:
        clarion = ClarionClient(await temporal_client(s), s)
        handle = await clarion.send_message(
            customer_id=customer,
            template=template,
            purpose=purpose.value if purpose else None,
            channels=channels,
            context=ctx,
            message_id=message_id,
            acknowledge_within=ack_within,
        )
        if not wait:
            if as_json:
                print_json({"message_id": handle.message_id, "workflow_id": handle.workflow_id})
            else:
                out.print(f"message {handle.message_id} started (workflow {handle.workflow_id})")
            return None
        return await wait_with_hints(handle, s)

    outcome = run(main())
    if outcome is None:
        return
    if as_json:
        print_json(outcome.model_dump(mode="json"))
    else:
        colour = {"delivered": "green", "suppressed": "yellow", "failed": "red"}[
            outcome.status.value
        ]
        out.print(
            f"message {outcome.message_id}: [{colour}]{outcome.status.value}[/{colour}]"
            + (f" by {outcome.channel.value}" if outcome.channel else "")
            + (f" (template v{outcome.template_version})" if outcome.template_version else "")
        )
        for attempt in outcome.attempts:
            out.print(
                f"  {attempt.channel.value}: {attempt.status.value} {attempt.reason}".rstrip(),
                highlight=False,
            )
        if outcome.reason and not outcome.attempts:
            out.print(f"  {outcome.reason}", highlight=False)
    code = outcome_exit_code(outcome)
    if code:
        raise typer.Exit(code)


@audit_app.callback(invoke_without_command=True)
def audit(
    ctx: typer.Context,
    customer: Annotated[str | None, typer.Option("--customer", help="Customer id")] = None,
    message: Annotated[str | None, typer.Option("--message", help="Message id")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """The audit trail of a customer or a message, oldest first; verify or export the chain.

    `clarion audit --customer ID` or `--message ID` lists events; `verify` and `export`
    work on the whole hash-chained trail."""
    if ctx.invoked_subcommand is not None:
        if customer is not None or message is not None:
            raise typer.BadParameter(
                f"not with `audit {ctx.invoked_subcommand}`", param_hint="--customer/--message"
            )
        return
    if customer is None and message is None:
        raise typer.BadParameter("give --customer or --message", param_hint="--customer")
    s = settings()

    async def main(store: Store) -> list[dict[str, Any]]:
        async with store.session() as session:
            events = await repo.audit_events(
                session, customer_external_id=customer, message_id=message, limit=limit
            )
        return [
            {
                "id": e.id,
                "at": e.at.isoformat(),
                "kind": e.kind,
                "customer": e.customer_external_id,
                "message_id": e.message_id,
                "channel": e.channel,
                "actor": e.actor,
                "reason": e.reason,
                "detail": e.detail,
            }
            for e in events
        ]

    rows = run(with_store(s, main))
    if as_json:
        print_json(rows)
        return
    table = Table("at", "kind", "message", "channel", "reason")
    for r in rows:
        table.add_row(
            r["at"][:19], r["kind"], r["message_id"] or "", r["channel"] or "", r["reason"]
        )
    out.print(table)


def _when(option: str, value: str) -> datetime:
    """An ISO-8601 date or time from the command line; UTC when it has no offset."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise Fail(f"{option}: {value!r}: use an ISO-8601 date or time", 2) from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _anchor(value: str) -> tuple[int, str]:
    seq, _, digest = value.partition(":")
    digest = digest.strip().lower()
    if (
        not seq.strip().isdigit()
        or len(digest) != 64
        or any(c not in "0123456789abcdef" for c in digest)
    ):
        raise Fail(f"--anchor: {value!r}: use SEQ:HASH (a seq and a 64-digit hex hash)", 2)
    return int(seq), digest


@audit_app.command("verify")
def audit_verify(
    anchor: Annotated[
        list[str] | None,
        typer.Option(
            "--anchor",
            help="SEQ:HASH of an event recorded earlier (from verify or an export) that "
            "must still be in the chain; repeatable",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Recompute every hash of the audit chain (exit 1 when it is broken).

    Exit 0 when the chain is intact; 1 at the first changed, deleted, inserted or
    reordered event, which it names. Events not sealed after a minute are warned about."""
    from clarion.store import audit as chain

    anchors = dict(_anchor(a) for a in anchor or [])
    s = settings()
    result = run(with_store(s, lambda store: chain.verify(store, anchors=anchors)))
    if as_json:
        print_json(result.as_json())
    else:
        for warning in result.warnings:
            err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
        if result.problem is None:
            out.print(
                f"audit chain OK: {result.count} events, head seq {result.head_seq} "
                f"hash {result.head_hash}",
                highlight=False,
            )
        else:
            err.print(
                f"[red]audit chain broken[/red] ({result.problem.kind}): "
                f"{result.problem.message}; {result.count} events verified before it",
                highlight=False,
            )
    if result.problem is not None:
        raise typer.Exit(1)


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


@audit_app.command("export")
def audit_export(
    since: Annotated[
        str, typer.Option("--since", help="ISO-8601 date or time (UTC when no offset)")
    ],
    until: Annotated[
        str | None, typer.Option("--until", help="ISO-8601 date or time, exclusive")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", help="File to write (default: standard output)")
    ] = None,
) -> None:
    """The audit chain from --since to --until, as JSON lines or CSV, for regulators.

    Events in seq order with their hashes, so the export can be verified without Clarion
    (docs/compliance.md has the recipe)."""
    import csv

    from clarion.audit import canonical_json
    from clarion.store import audit as chain

    start = _when("--since", since)
    end = _when("--until", until) if until is not None else None
    if end is not None and end <= start:
        raise Fail(f"--until: {until!r} is not after --since {since!r}", 2)
    try:
        kind = ExportFormat(fmt.lower())
    except ValueError as exc:
        raise Fail(f"--format: {fmt!r}: use jsonl or csv", 2) from exc
    s = settings()

    async def main(store: Store, sink: Any) -> int:
        writer = csv.writer(sink, lineterminator="\n") if kind is ExportFormat.CSV else None
        if writer is not None:
            writer.writerow(chain.EXPORT_FIELDS)
        count = 0
        async for row in chain.export(store, since=start, until=end):
            if writer is not None:
                row["detail"] = canonical_json(row["detail"])
                writer.writerow(["" if row[f] is None else row[f] for f in chain.EXPORT_FIELDS])
            else:
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
        return count

    with contextlib.ExitStack() as stack:
        if output is None:
            sink: Any = sys.stdout
        else:
            try:
                sink = stack.enter_context(output.open("w", encoding="utf-8", newline=""))
            except OSError as exc:
                raise Fail(f"--output: {str(output)!r}: {exc.strerror}", 2) from exc
        count = run(with_store(s, lambda store: main(store, sink)))
    err.print(f"{count} audit events exported", highlight=False)


# ------------------------------------------------------------------ journeys


@journeys_app.command("publish")
def journeys_publish(
    directory: Annotated[Path, typer.Argument(help="Folder of journey files (*.yaml)")],
    as_json: JsonOpt = False,
) -> None:
    """Validate and publish every journey in DIR; changed ones get a new immutable version."""
    from clarion.journeys import JourneyError
    from clarion.journeys.loader import load_journey_files
    from clarion.store import journeys as journey_repo

    s = settings()
    try:
        loaded = load_journey_files(directory)
    except JourneyError as exc:
        raise Fail(str(exc)) from exc
    definitions = [d for _, d in loaded]
    files = {d.name: path for path, d in loaded}

    async def main(store: Store) -> list[repo.PublishResult]:
        async with store.transaction() as session:
            problems = [
                f"{files[d.name]}: {p}"
                for d in definitions
                for p in await journey_repo.template_problems(session, definition=d)
            ]
            if problems:
                raise Fail("; ".join(problems))
            return [await journey_repo.publish_journey(session, definition=d) for d in definitions]

    print_published(run(with_store(s, main)), as_json=as_json)


@journeys_app.command("list")
def journeys_list(as_json: JsonOpt = False) -> None:
    """Published journeys with their latest version, entry events and steps."""
    from clarion.store import journeys as journey_repo

    s = settings()

    async def main(store: Store) -> list[dict[str, Any]]:
        async with store.session() as session:
            rows = []
            for j in await journey_repo.list_journeys(session):
                latest = j.versions[-1]
                d = journey_repo.definition_of(latest)
                rows.append(
                    {
                        "name": j.name,
                        "version": latest.version,
                        "versions": len(j.versions),
                        "entry_events": d.entry.events,
                        "exit_on": d.exit_on,
                        "goal": d.goal,
                        "steps": len(d.steps),
                        "published_at": latest.published_at.isoformat(),
                    }
                )
            return rows

    rows = run(with_store(s, main))
    if as_json:
        print_json(rows)
        return
    table = Table("name", "version", "entry events", "exit on", "goal", "steps")
    for r in rows:
        table.add_row(
            r["name"],
            f"v{r['version']}",
            ",".join(r["entry_events"]),
            ",".join(r["exit_on"]),
            r["goal"] or "",
            str(r["steps"]),
        )
    out.print(table)


@journeys_app.command("schema")
def journeys_schema() -> None:
    """Print the JSON Schema of journey files (for editors)."""
    from clarion.journeys import json_schema

    sys.stdout.write(json_schema())


@journeys_app.command("start")
def journeys_start(
    journey: Annotated[str, typer.Argument(help="Journey name")],
    customer: Annotated[str, typer.Argument(help="Customer id")],
    context: Annotated[
        str,
        typer.Option(
            "--context", help="Variables for the journey's messages", callback=_check_context
        ),
    ] = "{}",
    version: Annotated[int | None, typer.Option("--version", min=1, help="Default: latest")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a journey for one customer."""
    from starters.sdk import ClarionClient, JourneyRefused

    s = settings()

    async def main() -> str:
        clarion = ClarionClient(await temporal_client(s), s)
        try:
            handle = await clarion.start_journey(
                journey, customer, context=parse_context(context), version=version
            )
        except JourneyRefused as exc:
            raise Fail(str(exc)) from exc
        finally:
            await clarion.close()
        return handle.id

    workflow_id = run(main())
    if as_json:
        print_json({"workflow_id": workflow_id})
    else:
        out.print(f"started {workflow_id}")


@journeys_app.command("status")
def journeys_status(
    customer: Annotated[str, typer.Argument(help="Customer id")],
    as_json: JsonOpt = False,
) -> None:
    """Where a customer stands in each journey: current step, history, pending timer."""
    from clarion.store import journeys as journey_repo
    from starters.sdk import ClarionClient

    s = settings()

    async def main() -> list[dict[str, Any]]:
        clarion = ClarionClient(await temporal_client(s), s)
        try:
            async with clarion.store.session() as session:
                runs = await journey_repo.runs_for_customer(session, customer_external_id=customer)
                report = []
                for r in runs:
                    steps = await journey_repo.steps_of_run(session, run_id=r.id)
                    entry: dict[str, Any] = {
                        "journey": r.journey,
                        "version": r.version,
                        "workflow_id": r.workflow_id,
                        "status": r.status,
                        "reason": r.reason,
                        "started_at": r.started_at.isoformat(),
                        "ended_at": r.ended_at.isoformat() if r.ended_at else None,
                        "current_step": r.current_step,
                        "steps": [
                            {
                                "step": st.step,
                                "kind": st.kind,
                                "entered_at": st.entered_at.isoformat(),
                                "left_at": st.left_at.isoformat() if st.left_at else None,
                                "outcome": st.outcome,
                                "variant": st.variant,
                            }
                            for st in steps
                        ],
                    }
                    if r.ended_at is None:
                        live = await clarion.journey_status(r.journey, customer)
                        entry["current_step"] = live.current_step
                        entry["waiting_until"] = (
                            live.waiting_until.isoformat() if live.waiting_until else None
                        )
                        entry["waiting_for"] = live.waiting_for
                        entry["variants"] = live.variants
                        entry["inbox"] = live.inbox
                    report.append(entry)
                return report
        finally:
            await clarion.close()

    report = run(main())
    if as_json:
        print_json(report)
        return
    if not report:
        out.print(f"{customer} has not been in any journey")
    for r in report:
        state = r["status"] if r["ended_at"] else f"at {r['current_step']}"
        out.print(
            f"[bold]{r['journey']}[/bold] v{r['version']}: {state} {r['reason']}".rstrip(),
            highlight=False,
        )
        if r.get("waiting_until"):
            what = f" for {r['waiting_for']}" if r.get("waiting_for") else ""
            out.print(f"  waiting{what} until {r['waiting_until']}", highlight=False)
        for st in r["steps"]:
            out.print(
                f"  {st['entered_at'][:19]}  {st['step']:<20} {st['kind']:<9} {st['outcome']}",
                highlight=False,
            )


@events_app.command("send")
def events_send(
    customer: Annotated[str, typer.Argument(help="Customer id")],
    event: Annotated[str, typer.Argument(help="Event name, e.g. activated")],
    data: Annotated[
        str, typer.Option("--data", help="Event data as a JSON object", callback=_check_data)
    ] = "{}",
    event_id: Annotated[str | None, typer.Option("--event-id", help="Idempotency key")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Deliver an event to the customer's running journeys; start the journeys it triggers."""
    from starters.sdk import ClarionClient

    s = settings()

    async def main() -> Any:
        clarion = ClarionClient(await temporal_client(s), s)
        try:
            return await clarion.send_event(
                customer, event, parse_json_object(data, "--data"), event_id=event_id
            )
        finally:
            await clarion.close()

    result = run(main())
    if as_json:
        print_json(result.__dict__)
        return
    out.print(f"event {event} ({result.event_id}) for {customer}", highlight=False)
    out.print(f"  delivered to: {', '.join(result.delivered) or '-'}")
    out.print(f"  started:      {', '.join(result.started) or '-'}")
    for name, why in result.skipped.items():
        out.print(f"  not started:  {name} ({why})", highlight=False)


# ------------------------------------------------------------------ crisis


def progress_json(p: Any) -> dict[str, Any]:
    return p.model_dump(mode="json")


def print_progress(p: Any) -> None:
    out.print(
        f"[bold]broadcast {p.broadcast_id}[/bold]: {p.state.value}, message generation {p.gen}, "
        f"{p.done}/{p.total} done, {p.rate_per_s}/s"
        + (f", ETA {p.eta_s:.0f}s" if p.eta_s else "")
        + (f" ({p.reason})" if p.reason else ""),
        highlight=False,
    )
    table = Table("tier", "total", "sent", "failed", "suppressed", "pending", "notified after")
    for t in p.tiers:
        after = f"{t.notified_after_s:.1f}s" if t.notified_after_s is not None else "-"
        table.add_row(
            t.tier,
            str(t.total),
            str(t.sent),
            str(t.failed),
            str(t.suppressed),
            str(t.pending),
            after,
        )
    out.print(table)
    out.print(f"by channel: {p.by_channel}  by status: {p.by_status}", highlight=False)
    if p.possible_duplicates:
        out.print(f"possible duplicates after a crash: {p.possible_duplicates}")


async def follow_broadcast(handle: Any) -> Any:
    """Rich progress bars per tier until everyone has been reached (or the broadcast ended)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    ) as progress:
        while True:
            p = await handle.progress()
            for t in p.tiers:
                if t.tier not in bars:
                    bars[t.tier] = progress.add_task(t.tier, total=t.total)
                progress.update(bars[t.tier], completed=t.total - t.pending)
            if (
                p.state.value in ("active", "resolved", "cancelled", "rejected")
                and p.done >= p.total
            ):
                return p
            if p.state.value in ("resolved", "cancelled", "rejected"):
                return p
            await asyncio.sleep(0.5)


@crisis_app.command("launch")
def crisis_launch(
    title: Annotated[str, typer.Option("--title", help="What happened, for the record")],
    template: Annotated[str, typer.Option("--template", help="Template to send")],
    segment: Annotated[
        str | None, typer.Option("--segment", help="Who, e.g. \"region == 'eu-west'\"")
    ] = None,
    customers: Annotated[
        Path | None, typer.Option("--customers", help="File of customer ids, one a line")
    ] = None,
    severity: Annotated[str, typer.Option("--severity", help="critical, major or minor")] = "major",
    incident: Annotated[
        str | None, typer.Option("--incident", help="Incident id (default: broadcast id)")
    ] = None,
    tiers: Annotated[Path | None, typer.Option("--tiers", help="Tier configuration (YAML)")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Show progress until everyone is reached")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Launch a crisis broadcast; prints its id and returns at once (or --follow)."""
    from clarion.crisis.models import Severity
    from clarion.crisis.tiers import TierConfigError, load_tiers
    from clarion.errors import ValidationFailed
    from starters.sdk import ClarionClient

    if (segment is None) == (customers is None):
        raise Fail("give --segment or --customers (one of them)", 2)
    if severity not in {s.value for s in Severity}:
        raise Fail(f"--severity: {severity!r}: use critical, major or minor", 2)
    ids: list[str] | None = None
    if customers is not None:
        if not customers.is_file():
            raise Fail(f"--customers: {str(customers)!r}: no such file", 2)
        ids = [
            line.split(",")[0].strip()
            for line in customers.read_text().splitlines()
            if line.strip()
        ]
        ids = [i for i in ids if i and i != "id"]
    s = settings()
    try:
        tier_list = load_tiers(tiers or s.crisis_tiers_file)
    except TierConfigError as exc:
        raise Fail(str(exc), 2) from exc

    async def main() -> tuple[str, Any]:
        clarion = ClarionClient(await temporal_client(s), s)
        try:
            handle = await clarion.launch_broadcast(
                title=title, template=template, segment=segment, customers=ids,
                incident_id=incident, severity=severity, tiers=tier_list,
            )  # fmt: skip
            if not as_json:
                out.print(f"broadcast {handle.broadcast_id} launched")
            final = await follow_broadcast(handle) if follow else None
            return handle.broadcast_id, final
        except ValidationFailed as exc:
            raise Fail(str(exc), 2) from exc
        finally:
            await clarion.close()

    broadcast_id, final = run(main())
    if as_json:
        print_json(
            {"broadcast_id": broadcast_id, **({"progress": progress_json(final)} if final else {})}
        )
    elif final is not None:
        print_progress(final)


def _broadcast_call(broadcast_id: str, call: Callable[[Any], Awaitable[T]]) -> T:
    from starters.sdk import ClarionClient

    s = settings()

    async def main() -> T:
        clarion = ClarionClient(await temporal_client(s), s)
        try:
            return await call(clarion.broadcast(broadcast_id))
        finally:
            await clarion.close()

    try:
        return run(main())
    except Fail:
        raise
    except Exception as exc:
        cause = getattr(exc, "cause", None)
        raise Fail(f"broadcast {broadcast_id}: {cause or exc}") from exc


@alerts_app.command("ingest")
def alerts_ingest(
    source: Annotated[str, typer.Option("--source", help="The system that alerts")],
    key: Annotated[str, typer.Option("--key", help="What is alerting: one incident per key")],
    severity: Annotated[
        str, typer.Option("--severity", help="critical, major, minor, or resolved (recovery)")
    ],
    summary: Annotated[str, typer.Option("--summary", help="One line for humans")] = "",
    affects: Annotated[
        str | None, typer.Option("--affects", help="The affected customers (a segment)")
    ] = None,
    alert_type: Annotated[
        str, typer.Option("--type", help="The alert type in the rules (default: by key)")
    ] = "",
    as_json: JsonOpt = False,
) -> None:
    """Take an alert: a firing one opens (or joins) the incident of its key, which is
    debounced and proposed to the incident managers; ``resolved`` reports a recovery."""
    from clarion.errors import ValidationFailed
    from starters.sdk import build_alert

    fields: dict[str, Any] = {
        "source": source,
        "key": key,
        "severity": severity,
        "summary": summary,
        "affects": affects,
        "alert_type": alert_type,
    }
    try:
        build_alert(**fields)  # bad input fails here, before anything is contacted
    except ValidationFailed as exc:
        raise Fail(f"invalid alert: {exc}", 2) from exc

    async def call(clarion: Any) -> Any:
        return await clarion.ingest_alert(**fields)

    receipt = _approvals_call(call, temporal=True)
    if as_json:
        print_json({"key": receipt.key, "workflow_id": receipt.workflow_id, "note": receipt.note})
    elif receipt.workflow_id is None:
        out.print(f"alert {receipt.key}: {receipt.note}")
    else:
        out.print(f"alert {receipt.key} taken by {receipt.workflow_id}")


def _seconds_text(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f}s"


@alerts_app.command("incidents")
def alerts_incidents(
    key: Annotated[str | None, typer.Option("--key", help="Only this alert key")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only this status")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Incidents opened by alerts, newest first, with the time from alert to launch."""

    async def call(clarion: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await clarion.incidents(key=key, status=status, limit=limit)
        return found

    found = _approvals_call(call)
    if as_json:
        print_json(found)
        return
    if not found:
        out.print("no incidents")
        return
    table = Table(
        "incident", "key", "status", "severity", "alerts", "flaps", "audience", "alert→launch"
    )
    for i in found:
        table.add_row(
            i["incident_id"],
            i["key"],
            i["status"],
            i["severity"],
            str(i["alerts"]),
            str(i["flaps"]),
            "-" if i["audience_size"] is None else str(i["audience_size"]),
            _seconds_text(i["alert_to_launch_s"]),
        )
    out.print(table)


@alerts_app.command("show")
def alerts_show(incident_id: str, as_json: JsonOpt = False) -> None:
    """One incident: its alerts, proposal, decisions and times."""

    async def call(clarion: Any) -> dict[str, Any]:
        found: dict[str, Any] = await clarion.incident(incident_id)
        return found

    incident = _approvals_call(call)
    if as_json:
        print_json(incident)
        return
    for name, value in incident.items():
        if name.endswith("_s"):
            value = _seconds_text(value)
        elif isinstance(value, datetime):
            value = value.isoformat(timespec="seconds")
        out.print(f"{name}: {'-' if value in (None, '', []) else value}")


@crisis_app.command("report")
def crisis_report(
    broadcast_id: str,
    fmt: Annotated[str, typer.Option("--format", help="md or json")] = "md",
    output: Annotated[Path | None, typer.Option("--output", help="Write to this file")] = None,
) -> None:
    """The post-incident report of a broadcast: tier timings, channels, acknowledgements,
    updates, suppressed recipients by reason, approvals."""
    from clarion.crisis.report import to_markdown

    if fmt not in ("md", "json"):
        raise Fail(f"--format: {fmt!r}: use md or json", 2)

    async def call(clarion: Any) -> dict[str, Any]:
        report: dict[str, Any] = await clarion.broadcast_report(broadcast_id)
        return report

    report = _approvals_call(call)
    text = (
        json.dumps(report, indent=2, default=str) + "\n" if fmt == "json" else to_markdown(report)
    )
    if output is not None:
        output.write_text(text, encoding="utf-8")
        err.print(f"report written to {output}")
    else:
        sys.stdout.write(text)


@crisis_app.command("status")
def crisis_status(broadcast_id: str, as_json: JsonOpt = False) -> None:
    """Live progress: counts by tier, channel and status, rate and ETA."""
    p = _broadcast_call(broadcast_id, lambda h: h.progress())
    if as_json:
        print_json(progress_json(p))
    else:
        print_progress(p)


@crisis_app.command("update")
def crisis_update(
    broadcast_id: str,
    template: Annotated[str, typer.Option("--template", help="The follow-up message")],
) -> None:
    """Send a follow-up: reached recipients get it next; pending ones get it instead."""
    gen = _broadcast_call(broadcast_id, lambda h: h.update(template))
    out.print(f"broadcast {broadcast_id}: message generation {gen} ({template})")


@crisis_app.command("resolve")
def crisis_resolve(
    broadcast_id: str,
    template: Annotated[str, typer.Option("--template", help="The resolution notice")],
) -> None:
    """Send the resolution notice to everyone reached, then end the broadcast."""
    gen = _broadcast_call(broadcast_id, lambda h: h.resolve(template))
    out.print(f"broadcast {broadcast_id}: resolution notice is generation {gen}")


@crisis_app.command("cancel")
def crisis_cancel(
    broadcast_id: str, reason: Annotated[str, typer.Option("--reason")] = "cancelled by operator"
) -> None:
    """Stop sending."""
    _broadcast_call(broadcast_id, lambda h: h.cancel(reason))
    out.print(f"broadcast {broadcast_id}: cancel requested")


@crisis_app.command("ack")
def crisis_ack(
    broadcast_id: str, customer: Annotated[str, typer.Argument(help="Customer id")]
) -> None:
    """Record that a customer acknowledged the broadcast (e.g. confirmed by phone)."""
    first = _broadcast_call(broadcast_id, lambda h: h.acknowledge(customer))
    out.print(
        f"{customer}: {'acknowledged' if first else 'already acknowledged, or not a recipient'}"
    )


@crisis_app.command("reply")
def crisis_reply(
    sender: Annotated[str, typer.Argument(help="The phone number the reply came from")],
    body: Annotated[str, typer.Argument(help="The text of the reply")] = "",
) -> None:
    """Process an SMS reply: it acknowledges every active broadcast that reached the number
    (a STOP, START or HELP is handled as in `clarion consent inbound-sms`)."""
    consent_inbound_sms(sender, body, as_json=False)


@crisis_app.command("approve")
def crisis_approve(
    broadcast_id: str,
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Required to reject")] = "",
) -> None:
    """Approve (or reject) a broadcast whose template is not a pre-approved crisis
    template, as the operator of CLARION_OPERATOR_TOKEN (same as `clarion approvals`)."""
    answer = _approvals_call(
        lambda c: (
            c.reject(broadcast_id, reason=reason)
            if reject
            else c.approve(broadcast_id, reason=reason)
        ),
        temporal=True,
    )
    out.print(f"broadcast {broadcast_id}: {answer}")


@app.command("ack")
def ack(
    message_id: str,
    by: Annotated[str, typer.Option("--by", help="Who confirmed")] = "customer",
    channel: Annotated[str | None, typer.Option("--channel", help="How they confirmed")] = None,
) -> None:
    """Record that a message sent with --ack-within was acknowledged: it stops escalating."""
    from starters.sdk import ClarionClient

    s = settings()

    async def main() -> None:
        clarion = ClarionClient(await temporal_client(s), s)
        try:
            await clarion.get_message(message_id).acknowledge(by=by, channel=channel)
        finally:
            await clarion.close()

    try:
        run(main())
    except Fail:
        raise
    except Exception as exc:
        raise Fail(f"message {message_id}: {getattr(exc, 'cause', None) or exc}") from exc
    out.print(f"message {message_id}: acknowledged by {by}")


@consent_app.command("unsubscribe")
def consent_unsubscribe(
    token: Annotated[str, typer.Argument(help="The token of a List-Unsubscribe link")],
) -> None:
    """Apply a one-click unsubscribe token (what the HTTP endpoint does for a mailbox
    provider's POST): the customer is opted out of marketing email."""
    from clarion.errors import NotFound
    from clarion.store.tables import utcnow
    from clarion.unsubscribe import UnsubscribeTokenError, apply_unsubscribe

    s = settings()

    async def main(store: Store) -> Any:
        return await apply_unsubscribe(store, s, token, utcnow())

    try:
        claim = run(with_store(s, main))
    except UnsubscribeTokenError as exc:
        raise Fail(str(exc), 2) from exc
    except NotFound as exc:
        raise Fail(str(exc), 1) from exc
    out.print(
        f"{claim.customer_id}: opted out of {claim.purpose.value} {claim.channel.value} "
        f"(message {claim.message_id})"
    )


@consent_app.command("inbound-sms")
def consent_inbound_sms(
    sender: Annotated[str, typer.Argument(help="The phone number the text came from")],
    body: Annotated[str, typer.Argument(help="The text")],
    as_json: JsonOpt = False,
) -> None:
    """Process an inbound SMS: STOP/START/HELP keywords change consent or answer; any other
    text acknowledges the active broadcasts that reached the number. Prints the reply."""
    from clarion.errors import ValidationFailed
    from clarion.inbound import handle_inbound_sms

    s = settings()

    async def main(store: Store) -> Any:
        return await handle_inbound_sms(store, s, sender, body)

    try:
        result = run(with_store(s, main))
    except ValidationFailed as exc:
        raise Fail(str(exc), 2) from exc
    if as_json:
        print_json(
            {
                "action": result.action.value,
                "keyword": result.keyword,
                "phone": result.phone,
                "customers": result.customers,
                "reply": result.reply,
                "acknowledged": result.acknowledged,
            }
        )
        return
    who = ", ".join(result.customers) or "no known customer"
    if result.action.value == "none":
        acked = ", ".join(result.acknowledged)
        out.print(
            f"reply from {who}: acknowledged "
            f"{acked or 'nothing (no active broadcast reached this number)'}"
        )
    else:
        out.print(f"{result.keyword} from {who}: {result.action.value.replace('_', '-')}")
    if result.reply:
        out.print(f"reply: {result.reply}", highlight=False)


# ------------------------------------------------------------------ operators


@operators_app.command("add")
def operators_add(
    name: str,
    role: Annotated[
        list[str],
        typer.Option(
            "--role",
            help="viewer, operator, approver, incident_manager, compliance or admin (repeatable)",
        ),
    ],
    email: Annotated[str | None, typer.Option("--email", help="Where to notify them")] = None,
    phone: Annotated[str | None, typer.Option("--phone", help="E.164, for SMS notices")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add an operator and print their API token (shown this once; only its hash is kept).

    The first operator may be added by anyone with access to the store; after that, only
    an admin (CLARION_OPERATOR_TOKEN) may add operators."""
    from clarion.policy.approval import Role
    from clarion.store import operators as operators_repo

    s = settings()

    async def add(store: Store) -> tuple[Any, str]:
        async with store.transaction() as session:
            if await operators_repo.count_operators(session) > 0:
                me = await operators_repo.authenticate(session, s.operator_token.get_secret_value())
                if me is None or not me.has(Role.ADMIN):
                    raise Fail(
                        "only an admin may add operators: set CLARION_OPERATOR_TOKEN to an "
                        "admin's token",
                        3,
                    )
            try:
                return await operators_repo.add_operator(
                    session, name=name, roles=role, email=email, phone=phone
                )
            except operators_repo.OperatorError as exc:
                raise Fail(str(exc), 2) from exc

    info, token = run(with_store(s, add))
    if as_json:
        print_json({"name": info.name, "roles": info.roles, "token": token})
        return
    out.print(f"operator {info.name} ({', '.join(info.roles)}) added.")
    out.print("API token (shown once; keep it in CLARION_OPERATOR_TOKEN):")
    sys.stdout.write(token + "\n")


@operators_app.command("list")
def operators_list(as_json: JsonOpt = False) -> None:
    """Active operators and their roles."""
    from clarion.store import operators as operators_repo

    s = settings()

    async def read(store: Store) -> list[Any]:
        async with store.session() as session:
            return await operators_repo.list_operators(session)

    ops = run(with_store(s, read))
    if as_json:
        print_json([{"name": o.name, "roles": o.roles} for o in ops])
        return
    table = Table("name", "roles", "notified at")
    for o in ops:
        table.add_row(o.name, ", ".join(o.roles), ", ".join(x for x in (o.email, o.phone) if x))
    out.print(table)


# ------------------------------------------------------------------ approvals


def _age(since: datetime) -> str:
    seconds = int((datetime.now(UTC) - since).total_seconds())
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86_400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86_400}d{seconds % 86_400 // 3600}h"


def _approvals_call(call: Callable[[Any], Awaitable[T]], *, temporal: bool = False) -> T:
    from clarion.errors import ClarionError
    from starters.sdk import ApprovalRefused, ClarionClient, NotAuthorised

    s = settings()

    async def main() -> T:
        client = await temporal_client(s) if temporal else None
        clarion = ClarionClient(client, s)  # type: ignore[arg-type]
        try:
            return await call(clarion)
        finally:
            await clarion.close()

    try:
        return run(main())
    except Fail:
        raise
    except NotAuthorised as exc:
        raise Fail(str(exc), 3) from exc
    except ApprovalRefused as exc:
        raise Fail(f"refused: {exc}", 4) from exc
    except ClarionError as exc:
        raise Fail(str(exc), 1) from exc


@approvals_app.command("list")
def approvals_list(
    show_all: Annotated[bool, typer.Option("--all", help="Decided ones too")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Pending requests (oldest first), with their age and escalation level."""
    views = _approvals_call(lambda c: c.approvals(status=None if show_all else "pending"))
    if as_json:
        print_json([v.as_json() for v in views])
        return
    if not views:
        out.print("no pending approval requests" if not show_all else "no approval requests")
        return
    table = Table("id", "category", "template", "customer", "requested by", "age", "level")
    if show_all:
        table.add_column("status")
    for v in views:
        row = [
            v.id,
            v.category,
            f"{v.template} v{v.template_version}",
            v.customer_id or "-",
            v.requested_by,
            _age(v.created_at),
            str(v.level),
        ]
        table.add_row(*row, *([v.status] if show_all else []))
    out.print(table)


@approvals_app.command("show")
def approvals_show(request_id: str, as_json: JsonOpt = False) -> None:
    """One request: who asked, what for, its decisions, and the rendered preview."""
    v = _approvals_call(lambda c: c.approval(request_id))
    if as_json:
        print_json(v.as_json())
        return
    out.print(f"[bold]{v.id}[/bold]  {v.status}  (level {v.level}, {v.approvals_needed} needed)")
    out.print(
        f"{v.category}: {v.template} v{v.template_version} for {v.customer_id or '-'}, "
        f"requested by {v.requested_by} {_age(v.created_at)} ago"
    )
    for d in v.decisions:
        verb = "approved" if d.approved else "rejected"
        out.print(f"  {verb} by {d.operator} at {d.at:%Y-%m-%d %H:%M}: {d.reason}")
    if v.outcome_reason:
        out.print(f"outcome: {v.outcome_reason}")
    for channel, body in v.preview.items():
        if isinstance(body, dict):
            out.print(f"\n[bold]{channel}[/bold]")
            for key, value in body.items():
                out.print(f"  {key}: {value}", highlight=False, markup=False)
        else:
            out.print(f"\n{channel}: {body}", markup=False)


@approvals_app.command("approve")
def approvals_approve(
    request_id: str, reason: Annotated[str, typer.Option("--reason")] = ""
) -> None:
    """Approve as the operator of CLARION_OPERATOR_TOKEN (exit 4 when refused)."""
    answer = _approvals_call(lambda c: c.approve(request_id, reason=reason), temporal=True)
    out.print(f"{request_id}: {answer}")


@approvals_app.command("reject")
def approvals_reject(
    request_id: str, reason: Annotated[str, typer.Option("--reason", help="Required")]
) -> None:
    """Reject with a reason (exit 4 when refused)."""
    answer = _approvals_call(lambda c: c.reject(request_id, reason=reason), temporal=True)
    out.print(f"{request_id}: {answer}")


# ------------------------------------------------------------------ entry point


def main(argv: list[str] | None = None) -> None:
    """Console entry point. Leaves with os._exit once output is flushed: the Temporal
    SDK's native threads can crash the interpreter during shutdown after all work is
    done, and that must not change the exit status of a command that succeeded."""
    code = 0
    try:
        app(args=argv, prog_name="clarion")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            err.print(exc.code, highlight=False)
    except Fail as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        code = exc.code
    except ClarionError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        code = 1
    except KeyboardInterrupt:
        code = 130
    except BaseException as exc:
        import traceback

        traceback.print_exception(exc)
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
