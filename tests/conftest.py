"""Shared fixtures: one Temporal dev server for the run, loopback SMTP and Twilio servers,
and Clarion's store on SQLite (always) and PostgreSQL (when CLARION_TEST_POSTGRES_URL is set).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from clarion.channels import build_providers
from clarion.config import Settings
from clarion.customers import CustomerRecord
from clarion.journeys import load_journey_dir
from clarion.models import Channel, ConsentStatus, Purpose
from clarion.store import Store, repo
from clarion.store import journeys as journey_repo
from clarion.templates import load_template_dir
from clarion.temporal import data_converter_for, ensure_search_attributes
from starters.dev import temporal_binary
from starters.sdk import ClarionClient
from tests.support.fake_twilio import FakeTwilio
from tests.support.smtp_server import SmtpServer
from workers.main import build_worker

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("CLARION_TEST_POSTGRES_URL", "")
# The payload key of the test run: the session's client and every worker or CLI process a
# test starts (make_settings) encrypt and decrypt with it.
TEST_PAYLOAD_KEYS = "test-1:" + base64.b64encode(bytes(range(32))).decode()


def encrypting_converter() -> DataConverter:
    """Clarion's data converter with the test run's key."""
    settings = Settings(_env_file=None, payload_keys=TEST_PAYLOAD_KEYS)  # type: ignore[call-arg]
    return data_converter_for(settings)


async def start_time_skipping() -> WorkflowEnvironment:
    """The dev server with time skipping (each workflow has its own virtual clock), with
    Clarion's converter; the caller shuts it down."""
    return await WorkflowEnvironment.start_time_skipping_v2(
        dev_server_existing_path=temporal_binary(),
        dev_server_extra_args=[
            "--dynamic-config-value",
            "frontend.WorkflowTimeSkippingEnabled=true",
        ],
        data_converter=encrypting_converter(),
        dev_server_log_level="error",
    )


# -- the interpreter may crash at exit in the SDK's native threads once all work is done;
# -- leave with pytest's own exit status before that can happen.
_exit_status: list[int] = []


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _exit_status and not hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])


# -- servers


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=encrypting_converter(),
        dev_server_log_level="error",
    )
    await ensure_search_attributes(env.client, "default")
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_twilio() -> Iterator[FakeTwilio]:
    server = FakeTwilio()
    server.start()
    yield server
    server.stop()


# -- store


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules marked ``sqlite_only`` drive processes, HTTP or the browser over a store;
    their PostgreSQL variants would repeat the same store paths that the store-focused
    modules already run on PostgreSQL, at the cost of minutes of CI time."""
    only_postgres = os.environ.get("CLARION_TEST_BACKEND") == "postgres"
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("store") == "postgres"
        skip = item.get_closest_marker("sqlite_only") if on_postgres else only_postgres
        (drop if skip else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _backends() -> list[str]:
    """SQLite always; PostgreSQL too when CLARION_TEST_POSTGRES_URL is set.
    CLARION_TEST_BACKEND=sqlite or =postgres picks one (tests/run.py runs the two in
    parallel processes)."""
    chosen = os.environ.get("CLARION_TEST_BACKEND", "")
    if chosen == "postgres":
        return ["postgres"]
    if chosen == "sqlite" or not POSTGRES_URL:
        return ["sqlite"]
    return ["sqlite", "postgres"]


@pytest.fixture(scope="session", params=_backends())
async def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Store]:
    if request.param == "postgres":
        url = POSTGRES_URL
        s = Store(url)
        async with s.engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    else:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'clarion.db'}"
        s = Store(url)
    await s.migrate()
    async with s.transaction() as session:
        for definition in load_template_dir(ROOT / "examples" / "templates"):
            await repo.publish_template(session, definition=definition)
        for definition in load_template_dir(ROOT / "tests" / "data" / "templates"):
            await repo.publish_template(session, definition=definition)
        for journey in load_journey_dir(ROOT / "tests" / "data" / "journeys"):
            await journey_repo.publish_journey(session, definition=journey)
    try:
        yield s
    finally:
        await s.close()


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def add_customer(
    store: Store,
    *,
    email: bool = True,
    phone: str | None = None,
    locale: str = "en",
    consents: list[tuple[Channel, Purpose, ConsentStatus]] = (),  # type: ignore[assignment]
    name: str = "Test Customer",
    timezone: str = "",
    attributes: dict[str, object] | None = None,
) -> CustomerRecord:
    ext = uid("cust")
    record = CustomerRecord(
        external_id=ext,
        name=name,
        email=f"{ext}@example.com" if email else None,
        phone=phone,
        locale=locale,
        timezone=timezone,
        attributes={"plan": "pro", **(attributes or {})},
    )
    async with store.transaction() as session:
        customer, _ = await repo.upsert_customer(session, record=record)
        for channel, purpose, status in consents:
            await repo.record_consent(
                session,
                customer=customer,
                channel=channel,
                purpose=purpose,
                status=status,
                source="test",
            )
    return record


_phones = itertools.count(1000)


def unique_phone() -> str:
    """A valid US number no other test of this run uses (+1 415 555 1000 upwards); the
    Twilio-compatible server lives for the whole run, so numbers must never repeat."""
    return f"+1415555{next(_phones):04d}"


# -- Clarion on top


@dataclass
class Stack:
    settings: Settings
    store: Store
    client: Client
    clarion: ClarionClient
    smtp: SmtpServer
    twilio: FakeTwilio


def make_settings(
    tmp: Path,
    store: Store,
    smtp: SmtpServer,
    twilio: FakeTwilio,
    *,
    task_queue: str,
    **extra: object,
) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=tmp / ".clarion",
        database_url=store.url,
        task_queue=task_queue,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_timeout=5,
        email_from="Clarion Tests <noreply@clarion.test>",
        twilio_account_sid=twilio.account_sid,
        twilio_auth_token=twilio.auth_token,
        twilio_from_number="+14155550100",
        twilio_base_url=twilio.base_url,
        twilio_timeout=5,
        ack_secret="test-ack-secret",
        **{"payload_keys": TEST_PAYLOAD_KEYS, **extra},  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def running_stack(
    client: Client,
    store: Store,
    smtp: SmtpServer,
    twilio: FakeTwilio,
    tmp_path: Path,
    **extra: object,
) -> AsyncIterator[Stack]:
    """An in-process worker on a fresh task queue, wired to the loopback servers;
    ``extra`` settings on top of the test defaults."""
    settings = make_settings(tmp_path, store, smtp, twilio, task_queue=uid("tq"), **extra)
    providers = build_providers(settings)
    try:
        async with build_worker(client, settings, store, providers):
            yield Stack(
                settings=settings,
                store=store,
                client=client,
                clarion=ClarionClient(client, settings, store=store),
                smtp=smtp,
                twilio=twilio,
            )
    finally:
        for provider in providers.values():
            await provider.aclose()


StackWith = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]


@pytest.fixture
def stack_with(
    temporal_env: WorkflowEnvironment,
    store: Store,
    smtp_server: SmtpServer,
    fake_twilio: FakeTwilio,
    tmp_path: Path,
) -> StackWith:
    """``async with stack_with(**settings) as stack``: a stack (see ``running_stack``) on
    the session's server, store and loopback servers, with ``settings`` on top."""

    def make(**extra: object) -> contextlib.AbstractAsyncContextManager[Stack]:
        return running_stack(
            temporal_env.client, store, smtp_server, fake_twilio, tmp_path, **extra
        )

    return make


@pytest.fixture
async def stack(stack_with: StackWith) -> AsyncIterator[Stack]:
    """An in-process worker on a fresh task queue, wired to the loopback servers."""
    async with stack_with() as running:
        yield running


async def operator_client(stack: Stack, *roles: str, email: bool = True) -> ClarionClient:
    """A new operator with ``roles``; returns an SDK client acting as them."""
    from pydantic import SecretStr

    from clarion.store import operators as operators_repo

    name = uid("op")
    async with stack.store.transaction() as session:
        _, token = await operators_repo.add_operator(
            session,
            name=name,
            roles=list(roles),
            email=f"{name}@ops.clarion.test" if email else None,
        )
    settings = stack.settings.model_copy(update={"operator_token": SecretStr(token)})
    return ClarionClient(stack.client, settings, store=stack.store)
