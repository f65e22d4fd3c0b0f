"""Keys and AES-256-GCM sealing for everything Clarion writes to Temporal.

Temporal keeps every workflow and activity input, result, failure message and heartbeat
in its history. The payload codec (``clarion.temporal.EncryptionCodec``) seals each
serialized payload with the *active* key of a key ring and names the key in the payload's
metadata; any key of the ring opens what it sealed. Rotating is adding a key in front and
making it active: histories written under the old key still decode as long as the old
key stays listed.

Keys come from ``CLARION_PAYLOAD_KEYS`` (``id:base64,id:base64``, 32 bytes each, the first
is active unless ``CLARION_PAYLOAD_KEY_ID`` names another). Without it (the embedded
defaults, ``clarion dev``) a key is created once in ``<CLARION_HOME>/payload.key`` and
shared by every process that uses the same home.

This module is pure: no Temporal imports (those live in clarion/temporal.py).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from clarion.errors import ClarionError

if TYPE_CHECKING:
    from clarion.config import Settings

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the GCM standard nonce, random per payload
TAG_BYTES = 16
LOCAL_KEY_FILE = "payload.key"
KEYS_SETTING = "CLARION_PAYLOAD_KEYS"
KEY_ID_SETTING = "CLARION_PAYLOAD_KEY_ID"

_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class PayloadKeyConfigError(ValueError):
    """A key setting that cannot be used. The message names the setting and the key id,
    never the key material."""


class PayloadDecryptError(ClarionError):
    """A sealed payload that cannot be opened: unknown key id, or changed bytes."""

    def __init__(self, message: str, *, key_id: str) -> None:
        super().__init__(message)
        self.key_id = key_id


def _decode_key(key_id: str, text: str, setting: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip().translate(str.maketrans("-_", "+/")), validate=True)
    except (binascii.Error, ValueError):
        raise PayloadKeyConfigError(
            f"{setting}: key {key_id!r} is not valid base64"
        ) from None  # the cause would quote the key
    if len(raw) != KEY_BYTES:
        raise PayloadKeyConfigError(
            f"{setting}: key {key_id!r} is {len(raw)} bytes, expected {KEY_BYTES} (AES-256); "
            "create one with `clarion keys generate`"
        )
    return raw


def parse_keys(spec: str, *, setting: str = KEYS_SETTING) -> dict[str, bytes]:
    """``id:base64`` entries separated by commas or new lines -> {id: key}, in order."""
    keys: dict[str, bytes] = {}
    entries = [e.strip() for e in re.split(r"[,\n]", spec) if e.strip()]
    for n, entry in enumerate(entries, start=1):
        key_id, sep, material = entry.partition(":")
        key_id = key_id.strip()
        if not sep:
            raise PayloadKeyConfigError(f"{setting}: entry {n} is not of the form id:base64key")
        if not _KEY_ID.match(key_id):
            raise PayloadKeyConfigError(
                f"{setting}: entry {n}: a key id must be 1 to 64 letters, digits, '.', '_' or '-'"
            )
        if key_id in keys:
            raise PayloadKeyConfigError(f"{setting}: key id {key_id!r} is listed twice")
        keys[key_id] = _decode_key(key_id, material, setting)
    return keys


class KeyRing:
    """The keys a process may open payloads with, and the one it seals new payloads with."""

    def __init__(self, keys: Mapping[str, bytes], active_id: str | None = None) -> None:
        if not keys:
            raise PayloadKeyConfigError(f"{KEYS_SETTING}: no key configured")
        active = active_id or next(iter(keys))
        if active not in keys:
            raise PayloadKeyConfigError(
                f"{KEY_ID_SETTING}: key id {active!r} is not listed in {KEYS_SETTING} "
                f"(listed: {', '.join(keys)})"
            )
        for key_id, key in keys.items():
            if len(key) != KEY_BYTES:
                raise PayloadKeyConfigError(f"key {key_id!r}: expected {KEY_BYTES} bytes")
        self.active_id = active
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}

    @property
    def ids(self) -> list[str]:
        return list(self._ciphers)

    def __repr__(self) -> str:  # never the keys
        return f"KeyRing(active={self.active_id!r}, ids={self.ids!r})"

    def seal(self, plaintext: bytes) -> tuple[str, bytes]:
        """(active key id, nonce + ciphertext + tag). The key id is bound as associated
        data, so a payload relabelled with another key id does not open."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.active_id].encrypt(nonce, plaintext, self.active_id.encode())
        return self.active_id, nonce + sealed

    def open(self, key_id: str, sealed: bytes) -> bytes:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadDecryptError(
                f"cannot decrypt a Temporal payload: its key id {key_id!r} is not configured "
                f"(configured: {', '.join(self.ids)}); add that key to {KEYS_SETTING}",
                key_id=key_id,
            )
        if len(sealed) < NONCE_BYTES + TAG_BYTES:
            raise PayloadDecryptError(
                f"cannot decrypt a Temporal payload sealed with key {key_id!r}: it is truncated",
                key_id=key_id,
            )
        try:
            return cipher.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise PayloadDecryptError(
                f"cannot decrypt a Temporal payload sealed with key {key_id!r}: "
                "it was changed, or that key id now names other key material",
                key_id=key_id,
            ) from None


def new_key_id(now: datetime | None = None) -> str:
    """``k<yyyymmdd>-<4 hex>``: sorts by creation date, unique enough to add keys freely."""
    return f"k{(now or datetime.now(UTC)):%Y%m%d}-{secrets.token_hex(2)}"


def generate_key_line(key_id: str | None = None) -> str:
    """A new ``id:base64`` entry for CLARION_PAYLOAD_KEYS."""
    key_id = key_id or new_key_id()
    if not _KEY_ID.match(key_id):
        raise PayloadKeyConfigError(
            f"key id {key_id!r} must be 1 to 64 letters, digits, '.', '_' or '-'"
        )
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"


def local_key_path(home: Path) -> Path:
    return home / LOCAL_KEY_FILE


def load_or_create_local_keys(home: Path) -> dict[str, bytes]:
    """The keys of ``<home>/payload.key``, creating the file (mode 0600) with a new key if
    it does not exist. Safe when several processes sharing ``home`` start at once: the file
    appears complete or not at all (written aside, then hard-linked into place)."""
    path = local_key_path(home)
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{LOCAL_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(generate_key_line(f"local-{secrets.token_hex(4)}") + "\n")
            try:
                os.link(aside, path)
            except FileExistsError:  # another process was first: use its key
                pass
            except OSError:  # a filesystem without hard links
                if not path.exists():
                    os.replace(aside, path)
        finally:
            aside.unlink(missing_ok=True)
    return parse_keys(path.read_text(), setting=str(path))


def keyring_for(settings: Settings) -> KeyRing:
    """The key ring of ``settings``: CLARION_PAYLOAD_KEYS, or the local key file."""
    spec = settings.payload_keys.get_secret_value()
    if spec.strip():
        return KeyRing(parse_keys(spec), settings.payload_key_id or None)
    return KeyRing(load_or_create_local_keys(settings.home))
