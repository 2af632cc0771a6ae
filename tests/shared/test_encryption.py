"""Secrets at rest: Fernet over the configured keys, newest first, and rotation."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from shared.encryption import EncryptionKeyError, SecretBox, UndecryptableSecretError


def new_key() -> str:
    return Fernet.generate_key().decode()


def test_a_secret_is_stored_unreadable_and_read_back() -> None:
    box = SecretBox([new_key()])
    stored = box.encrypt("whsec_the-real-secret")
    assert "the-real-secret" not in stored
    assert stored != box.encrypt("whsec_the-real-secret")  # a fresh IV each time
    assert box.decrypt(stored) == "whsec_the-real-secret"


def test_after_a_rotation_old_values_stay_readable_until_reencrypted() -> None:
    old, new = new_key(), new_key()
    stored = SecretBox([old]).encrypt("zapier-token")
    rotated = SecretBox.from_setting(f"{new}, {old}")
    assert rotated.decrypt(stored) == "zapier-token"
    reencrypted = rotated.reencrypt(stored)
    with pytest.raises(UndecryptableSecretError):
        SecretBox([old]).decrypt(reencrypted)
    assert SecretBox([new]).decrypt(reencrypted) == "zapier-token"
    with pytest.raises(UndecryptableSecretError):
        SecretBox([new]).decrypt(stored)


@pytest.mark.parametrize("setting", ["", " , ", "not-a-fernet-key"])
def test_without_a_usable_key_the_box_cannot_be_built(setting: str) -> None:
    with pytest.raises(EncryptionKeyError, match="LEADRELAY_ENCRYPTION_KEYS"):
        SecretBox.from_setting(setting)


def test_signing_keys_follow_the_encryption_keys() -> None:
    old, new = new_key(), new_key()
    before = SecretBox([old]).signing_keys("links")
    after = SecretBox([new, old]).signing_keys("links")
    assert after[1] == before[0] and after[0] != before[0]
    assert SecretBox([old]).signing_keys("other") != before
