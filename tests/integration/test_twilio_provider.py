"""The Twilio providers against the Twilio-compatible server on loopback: async requests on
an aiohttp session (no thread per message), errors classified, the session closed."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clarion.channels.base import OutgoingCall, OutgoingSms
from clarion.channels.sms import TwilioSmsProvider, TwilioVoiceProvider
from clarion.config import Settings
from clarion.errors import PermanentChannelError, RetryableChannelError
from tests.support.fake_twilio import FakeTwilio
from tests.support.smtp_server import free_port


def settings_for(base_url: str, tmp_path: Path, **extra: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=tmp_path,
        twilio_account_sid="AC00000000000000000000000000000001",
        twilio_auth_token="test-token",  # type: ignore[arg-type]
        twilio_from_number="+14155550100",
        twilio_base_url=base_url,
        **extra,
    )


class NoThreads(concurrent.futures.ThreadPoolExecutor):
    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a provider ran a request in a thread")


async def test_sms_and_calls_go_out_without_threads(
    fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    loop = asyncio.get_running_loop()  # the test session's loop: its executor is put back
    loop.set_default_executor(NoThreads())
    settings = settings_for(fake_twilio.base_url, tmp_path, twilio_connections=2)
    sms, voice = TwilioSmsProvider(settings), TwilioVoiceProvider(settings)
    numbers = [f"+1628555{i:04d}" for i in range(20)]
    try:
        receipts = await asyncio.gather(
            *(sms.send(OutgoingSms(f"m-{n}", n, f"Hello {n}")) for n in numbers)
        )
        call = await voice.send(OutgoingCall("c-1", "+16285559999", "Please call us back."))
    finally:
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor())
        await sms.aclose()
        await voice.aclose()
    assert len({r.provider_message_id for r in receipts}) == 20
    for number, receipt in zip(numbers, receipts, strict=True):
        [sent] = fake_twilio.to(number)
        assert (sent["body"], sent["sid"]) == (f"Hello {number}", receipt.provider_message_id)
        assert sent["from"] == "+14155550100"
    [placed] = fake_twilio.calls_to("+16285559999")
    assert placed["sid"] == call.provider_message_id
    assert "<Say>Please call us back.</Say>" in placed["twiml"]


async def test_errors_are_classified(fake_twilio: FakeTwilio, tmp_path: Path) -> None:
    fake_twilio.invalid_numbers.add("+16285550000")
    provider = TwilioSmsProvider(settings_for(fake_twilio.base_url, tmp_path))
    try:
        with pytest.raises(PermanentChannelError, match="code 21211"):
            await provider.send(OutgoingSms("bad", "+16285550000", "x"))
        fake_twilio.fail_next.extend([429, 503])
        for _ in range(2):
            with pytest.raises(RetryableChannelError, match=r"Twilio (429|503)"):
                await provider.send(OutgoingSms("later", "+16285550001", "x"))
        assert (await provider.send(OutgoingSms("now", "+16285550001", "x"))).provider_message_id
    finally:
        fake_twilio.invalid_numbers.discard("+16285550000")
        await provider.aclose()


async def test_an_unreachable_api_is_retryable(tmp_path: Path) -> None:
    provider = TwilioSmsProvider(settings_for(f"http://127.0.0.1:{free_port()}", tmp_path))
    try:
        with pytest.raises(RetryableChannelError, match="Twilio unavailable") as caught:
            await provider.send(OutgoingSms("m", "+16285550002", "x"))
    finally:
        await provider.aclose()
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectionError)


def test_a_provider_belongs_to_the_loop_it_first_sends_from(
    fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    """Built outside any loop; its connections are opened by the first send, refused to
    another loop, and closed by aclose (after which another loop may use it)."""
    provider = TwilioSmsProvider(settings_for(fake_twilio.base_url, tmp_path))

    async def first_loop() -> None:
        await provider.send(OutgoingSms("loop-0", "+16285551000", "x"))
        other = await asyncio.to_thread(
            asyncio.run, provider.send(OutgoingSms("loop-x", "+16285551002", "x"))
        )
        raise AssertionError(f"sent from another loop: {other}")

    with pytest.raises(RuntimeError, match="belong to another event loop"):
        asyncio.run(first_loop())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(provider.aclose())
        asyncio.run(provider.send(OutgoingSms("loop-1", "+16285551001", "x")))
        asyncio.run(provider.aclose())
        gc.collect()
    assert len(fake_twilio.to("+16285551000")) == len(fake_twilio.to("+16285551001")) == 1
    assert fake_twilio.to("+16285551002") == []
    assert not [w for w in caught if "Unclosed" in str(w.message)]
