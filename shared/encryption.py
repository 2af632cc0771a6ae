"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) over the keys of `LEADRELAY_ENCRYPTION_KEYS`.

The setting holds one or more Fernet keys, comma-separated, newest first: the first encrypts,
every one decrypts (`MultiFernet`). To rotate, put a new key in front, run
`leadrelay reencrypt` (every stored secret is encrypted again with the newest key), then drop
the old key. A service that stores secrets builds its `SecretBox` when its app is created, so
a missing or malformed key stops it at start with a message naming the setting.

Keys for HMAC signatures (the router's action links) are derived from the same keys, one per
purpose, so they rotate with them: sign with the newest, accept any.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

KEYS_VARIABLE = "LEADRELAY_ENCRYPTION_KEYS"


class EncryptionKeyError(RuntimeError):
    """No usable key in `LEADRELAY_ENCRYPTION_KEYS`; the message says what to do."""


class UndecryptableSecretError(RuntimeError):
    """A stored value was encrypted with none of the configured keys."""


def parse_keys(value: str) -> list[str]:
    return [key.strip() for key in value.split(",") if key.strip()]


class SecretBox:
    """Encrypts and decrypts the secrets a service stores."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise EncryptionKeyError(
                f"{KEYS_VARIABLE} is not set: secrets are stored encrypted and need a key. "
                "Make one with `python -c \"from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())\"`"
            )
        try:
            fernets = [Fernet(key.encode()) for key in keys]
        except ValueError:
            raise EncryptionKeyError(
                f"{KEYS_VARIABLE}: each key must be 32 url-safe base64-encoded bytes "
                "(a Fernet key)"
            ) from None
        self._keys = [base64.urlsafe_b64decode(key.encode()) for key in keys]
        self._fernet = MultiFernet(fernets)
        self._signing: dict[str, list[bytes]] = {}

    @classmethod
    def from_setting(cls, value: str) -> SecretBox:
        """The box of a `LEADRELAY_ENCRYPTION_KEYS` value (comma-separated, newest first)."""
        return cls(parse_keys(value))

    @classmethod
    def from_environment(cls) -> SecretBox:
        return cls.from_setting(os.environ.get(KEYS_VARIABLE, ""))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, stored: str) -> str:
        try:
            return self._fernet.decrypt(stored.encode()).decode()
        except InvalidToken:
            raise UndecryptableSecretError(
                f"a stored secret was encrypted with a key {KEYS_VARIABLE} no longer holds"
            ) from None

    def encrypt_optional(self, plaintext: str | None) -> str | None:
        return None if plaintext is None else self.encrypt(plaintext)

    def decrypt_optional(self, stored: str | None) -> str | None:
        return None if stored is None else self.decrypt(stored)

    def reencrypt(self, stored: str) -> str:
        """`stored` encrypted again with the newest key (its original timestamp kept)."""
        try:
            return self._fernet.rotate(stored.encode()).decode()
        except InvalidToken:
            raise UndecryptableSecretError(
                f"a stored secret was encrypted with a key {KEYS_VARIABLE} no longer holds"
            ) from None

    def signing_keys(self, purpose: str) -> list[bytes]:
        """HMAC keys for `purpose`, one per encryption key, newest first."""
        if purpose not in self._signing:
            label = f"leadrelay signing key: {purpose}".encode()
            self._signing[purpose] = [hmac.new(key, label, hashlib.sha256).digest()
                                      for key in self._keys]
        return self._signing[purpose]
