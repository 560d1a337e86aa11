"""A deactivation ends the user's sessions for good, by Django's own mechanism: a session is bound
to its user's password hash (``get_session_auth_hash``, an HMAC of the stored ``password`` field), so
a change of that field signs out every session at once, in every session store, as a password
change does. A deactivation cannot choose a new password (the user's own must work again when an
operator re-activates them), so it rewrites the stored hash under this wrapper: the field changes,
with a fresh nonce each time, while the password it checks stays the same. Django judged a session
left before the deactivation by the old hash only while the account was off: re-activated, every
cookie left anywhere (a shared machine, a stolen one) signed in again, though the API token beside
it was deleted for good. The next sign-in with the password rehashes it with the preferred hasher
(``must_update``)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.hashers import BasePasswordHasher, check_password, is_password_usable, make_password
from django.utils.crypto import get_random_string

ALGORITHM = "signed_out"
PASSWORD_MAX_CHARS = 128  # ``AbstractBaseUser.password``'s column


class SignedOutHasher(BasePasswordHasher):
    """``signed_out$<nonce>$<the hash it wraps>``: checks a password as the wrapped hash does; never
    makes a hash of its own (``encode`` is the base class's refusal)."""

    algorithm = ALGORITHM

    def verify(self, password: str, encoded: str) -> bool:
        return check_password(password, _wrapped(encoded))

    def must_update(self, encoded: str) -> bool:
        return True

    def harden_runtime(self, password: str, encoded: str) -> None:
        pass  # the wrapped hasher's own work is done by ``verify``

    def safe_summary(self, encoded: str) -> dict[str, Any]:
        return {"algorithm": self.algorithm}

    def decode(self, encoded: str) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "wrapped": _wrapped(encoded)}


def _wrapped(encoded: str) -> str:
    return encoded.split("$", 2)[2] if encoded.startswith(f"{ALGORITHM}$") else encoded


def password_signed_out(encoded: str) -> str | None:
    """``encoded`` (a user's stored password) changed so that every session of its user ends, the
    password it checks kept. An unusable one (no password) is made another unusable one. None for a
    hash the wrapper would take past the column (scrypt's is 128 characters, the column's length):
    its sessions are ended another way (``users.sessions_end``), the hash kept."""
    if not is_password_usable(encoded):
        return make_password(None)
    wrapped = f"{ALGORITHM}${get_random_string(12)}${_wrapped(encoded)}"
    return wrapped if len(wrapped) <= PASSWORD_MAX_CHARS else None
