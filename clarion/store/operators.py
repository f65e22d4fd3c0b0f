"""Operators and their API tokens. A token is shown once; the store keeps its SHA-256."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.errors import NotFound
from clarion.policy.approval import Role
from clarion.store.tables import Operator

TOKEN_PREFIX = "clr_"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")


class OperatorError(ValueError):
    pass


@dataclass(frozen=True)
class OperatorInfo:
    name: str
    roles: list[str]
    email: str | None = None
    phone: str | None = None

    def has(self, *roles: Role) -> bool:
        return Role.ADMIN.value in self.roles or any(r.value in self.roles for r in roles)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _info(row: Operator) -> OperatorInfo:
    return OperatorInfo(name=row.name, roles=list(row.roles), email=row.email, phone=row.phone)


def check_roles(roles: Sequence[str]) -> list[str]:
    known = {r.value for r in Role}
    for role in roles:
        if role not in known:
            raise OperatorError(f"role {role!r} is not one of {', '.join(sorted(known))}")
    if not roles:
        raise OperatorError("an operator needs at least one role")
    return sorted(set(roles))


async def add_operator(
    session: AsyncSession,
    *,
    name: str,
    roles: Sequence[str],
    email: str | None = None,
    phone: str | None = None,
) -> tuple[OperatorInfo, str]:
    """Create an operator; returns it with its API token (the only time it is visible)."""
    if not NAME.match(name):
        raise OperatorError(
            f"operator name {name!r}: use letters, digits, '.', '_', '@' or '-' (at most 100)"
        )
    checked = check_roles(roles)
    if await session.scalar(select(Operator.id).where(Operator.name == name)) is not None:
        raise OperatorError(f"operator {name!r} exists already")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = Operator(name=name, roles=checked, token_hash=hash_token(token), email=email, phone=phone)
    session.add(row)
    await session.flush()
    return _info(row), token


async def count_operators(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Operator)) or 0)


async def authenticate(session: AsyncSession, token: str) -> OperatorInfo | None:
    """The active operator holding ``token``, or None."""
    if not token:
        return None
    row = (
        await session.execute(
            select(Operator).where(
                Operator.token_hash == hash_token(token), Operator.disabled_at.is_(None)
            )
        )
    ).scalar_one_or_none()
    return None if row is None else _info(row)


async def get_operator(session: AsyncSession, name: str) -> OperatorInfo:
    row = (
        await session.execute(select(Operator).where(Operator.name == name))
    ).scalar_one_or_none()
    if row is None:
        raise NotFound("operator", name)
    return _info(row)


async def list_operators(session: AsyncSession, *, active_only: bool = True) -> list[OperatorInfo]:
    query = select(Operator).order_by(Operator.name)
    if active_only:
        query = query.where(Operator.disabled_at.is_(None))
    return [_info(r) for r in (await session.execute(query)).scalars()]


async def roster(session: AsyncSession) -> dict[str, list[str]]:
    """Every active operator: name -> roles (the approval gate checks roles against it)."""
    return {op.name: op.roles for op in await list_operators(session)}
