"""Payload encryption: keys from settings, AES-256-GCM sealing, the Temporal payload codec."""

from __future__ import annotations

import base64
import stat
import threading
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.exceptions import ApplicationError

from clarion.codec import (
    KeyRing,
    PayloadDecryptError,
    PayloadKeyConfigError,
    generate_key_line,
    keyring_for,
    load_or_create_local_keys,
    local_key_path,
    parse_keys,
)
from clarion.config import Settings
from clarion.temporal import (
    ENCRYPTED_ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    data_converter_for,
)

K1 = bytes(range(32))
K2 = bytes(range(100, 132))


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


# -- settings


def test_keys_from_settings_first_is_active_by_default() -> None:
    s = settings(payload_keys=f"k2:{b64(K2)}, k1:{b64(K1)}")
    ring = keyring_for(s)
    assert ring.ids == ["k2", "k1"] and ring.active_id == "k2"
    s = settings(payload_keys=f"k2:{b64(K2)},k1:{b64(K1)}", payload_key_id="k1")
    assert keyring_for(s).active_id == "k1"


def test_key_lines_may_be_separated_by_new_lines_and_urlsafe() -> None:
    keys = parse_keys(f"a:{base64.urlsafe_b64encode(K2).decode()}\nb:{b64(K1)}\n")
    assert keys == {"a": K2, "b": K1}


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"payload_keys": "k1:not*base64"}, "CLARION_PAYLOAD_KEYS: key 'k1' is not valid base64"),
        (
            {"payload_keys": f"k1:{b64(K1[:16])}"},
            "CLARION_PAYLOAD_KEYS: key 'k1' is 16 bytes, expected 32",
        ),
        (
            {"payload_keys": f"k1:{b64(K1)},k1:{b64(K2)}"},
            "CLARION_PAYLOAD_KEYS: key id 'k1' is listed twice",
        ),
        (
            {"payload_keys": f"k1:{b64(K1)}", "payload_key_id": "k9"},
            "CLARION_PAYLOAD_KEY_ID: key id 'k9' is not listed in CLARION_PAYLOAD_KEYS",
        ),
        ({"payload_keys": b64(K1)}, "CLARION_PAYLOAD_KEYS: entry 1 is not of the form id:"),
        ({"payload_keys": f"a b:{b64(K1)}"}, "CLARION_PAYLOAD_KEYS: entry 1: a key id must"),
        ({"payload_key_id": "k1"}, "CLARION_PAYLOAD_KEY_ID is set but CLARION_PAYLOAD_KEYS"),
    ],
)
def test_bad_key_settings_are_refused_without_showing_key_material(
    values: dict[str, str], problem: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        settings(**values)
    text = str(caught.value)
    assert problem in text
    for key in (K1, K2, K1[:16]):
        assert b64(key) not in text and b64(key)[:12] not in text


def test_generated_key_lines_are_valid_and_distinct() -> None:
    a, b = generate_key_line("k-a"), generate_key_line()
    assert a.startswith("k-a:") and b.startswith("k")
    keys = parse_keys(f"{a},{b}")
    assert len(keys) == 2 and all(len(k) == 32 for k in keys.values())
    with pytest.raises(PayloadKeyConfigError):
        generate_key_line("no spaces")


def test_no_configured_key_means_one_local_key_file_shared_by_the_home(tmp_path: Path) -> None:
    home = tmp_path / ".clarion"
    first = keyring_for(settings(home=home))
    second = keyring_for(settings(home=home))
    assert first.ids == second.ids and first.ids[0].startswith("local-")
    path = local_key_path(home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # the same key: what one process sealed, another opens
    key_id, sealed = first.seal(b"hello")
    assert second.open(key_id, sealed) == b"hello"
    # another home, another key
    assert keyring_for(settings(home=tmp_path / "other")).ids != first.ids


def test_processes_creating_the_local_key_at_once_agree(tmp_path: Path) -> None:
    results: list[dict[str, bytes]] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        results.append(load_or_create_local_keys(tmp_path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(r == results[0] for r in results)
    assert [p.name for p in tmp_path.iterdir()] == ["payload.key"]  # no leftovers


# -- sealing


def test_seal_uses_a_fresh_nonce_and_hides_the_text() -> None:
    ring = KeyRing({"k1": K1})
    (_, a), (_, b) = ring.seal(b"ada@example.com"), ring.seal(b"ada@example.com")
    assert a != b and b"ada@example.com" not in a
    assert len(a) == 12 + len(b"ada@example.com") + 16
    assert "k1" in repr(ring) and b64(K1) not in repr(ring)


# -- the codec


async def test_codec_round_trip_and_metadata() -> None:
    codec = EncryptionCodec(KeyRing({"k1": K1}))
    original = [plain("ada@example.com"), plain("+14155550123")]
    encoded = await codec.encode(original)
    for p in encoded:
        assert p.metadata["encoding"] == ENCRYPTED_ENCODING == b"binary/encrypted"
        assert p.metadata[KEY_ID_METADATA] == b"k1"
        assert b"ada@example.com" not in p.SerializeToString()
        assert b"json/plain" not in p.SerializeToString()  # the metadata is sealed too
    assert await codec.decode(encoded) == original


async def test_rotation_old_payloads_still_decode_after_a_new_active_key() -> None:
    before = EncryptionCodec(KeyRing({"k1": K1}))
    old = await before.encode([plain("written under k1")])
    after = EncryptionCodec(KeyRing({"k2": K2, "k1": K1}))
    assert await after.decode(old) == [plain("written under k1")]
    new = await after.encode([plain("written under k2")])
    assert new[0].metadata[KEY_ID_METADATA] == b"k2"
    assert await after.decode(new) == [plain("written under k2")]
    # a process that still only knows k1 names the key it lacks
    with pytest.raises(PayloadDecryptError, match="key id 'k2' is not configured") as caught:
        await before.decode(new)
    assert caught.value.key_id == "k2" and "configured: k1" in str(caught.value)


async def test_unknown_key_id_is_a_clear_error() -> None:
    codec = EncryptionCodec(KeyRing({"k1": K1}))
    [sealed] = await codec.encode([plain("x")])
    sealed.metadata[KEY_ID_METADATA] = b"k-gone"
    with pytest.raises(PayloadDecryptError, match="'k-gone' is not configured"):
        await codec.decode([sealed])


@pytest.mark.parametrize("where", [0, 12, -1])
async def test_tampered_ciphertext_is_refused(where: int) -> None:
    codec = EncryptionCodec(KeyRing({"k1": K1}))
    [sealed] = await codec.encode([plain("x")])
    data = bytearray(sealed.data)
    data[where] ^= 0x01
    sealed.data = bytes(data)
    with pytest.raises(PayloadDecryptError, match="sealed with key 'k1': it was changed"):
        await codec.decode([sealed])


async def test_truncated_ciphertext_is_refused() -> None:
    codec = EncryptionCodec(KeyRing({"k1": K1}))
    [sealed] = await codec.encode([plain("x")])
    sealed.data = sealed.data[:20]
    with pytest.raises(PayloadDecryptError, match="truncated"):
        await codec.decode([sealed])


async def test_key_id_is_bound_to_the_ciphertext() -> None:
    """Relabelling a payload with another configured key id (same material) fails: the
    key id is the associated data of the seal."""
    codec = EncryptionCodec(KeyRing({"k1": K1, "alias": K1}))
    [sealed] = await codec.encode([plain("x")])
    sealed.metadata[KEY_ID_METADATA] = b"alias"
    with pytest.raises(PayloadDecryptError, match="'alias'"):
        await codec.decode([sealed])


async def test_unencrypted_payloads_pass_through() -> None:
    codec = EncryptionCodec(KeyRing({"k1": K1}))
    old = [plain("from a history recorded before encryption"), Payload(metadata={}, data=b"")]
    assert await codec.decode(old) == old


# -- the data converter


class Contact(BaseModel):
    customer_id: str
    email: str


async def test_data_converter_encrypts_values_and_failure_messages() -> None:
    converter = data_converter_for(settings(payload_keys=f"k1:{b64(K1)}"))
    [payload] = await converter.encode([Contact(customer_id="c-1", email="ada@example.com")])
    assert b"ada@example.com" not in payload.SerializeToString()
    [back] = await converter.decode([payload], [Contact])
    assert back == Contact(customer_id="c-1", email="ada@example.com")

    failure = Failure()
    try:
        try:
            raise ValueError("SMTP 550 <ada@example.com>: no such mailbox")
        except ValueError as cause:
            raise ApplicationError("The 'To' number +14155550123 is not valid") from cause
    except ApplicationError as exc:
        await converter.encode_failure(exc, failure)
    raw = failure.SerializeToString()
    assert b"+14155550123" not in raw and b"ada@example.com" not in raw
    assert failure.message == "Encoded failure"
    error = await converter.decode_failure(failure)
    assert str(error) == "The 'To' number +14155550123 is not valid"
    assert "ada@example.com" in str(error.__cause__)


async def test_data_converter_reads_unencrypted_values() -> None:
    converter = data_converter_for(settings(payload_keys=f"k1:{b64(K1)}"))
    payload = Payload(
        metadata={"encoding": b"json/plain"},
        data=b'{"customer_id":"c-1","email":"old@example.com"}',
    )
    [back] = await converter.decode([payload], [Contact])
    assert back.email == "old@example.com"
