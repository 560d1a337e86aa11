"""Start-up checks: the secrets' encryption keys must be Fernet keys."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_secrets_keys(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    from cryptography.fernet import Fernet

    errors = []
    for index, key in enumerate(settings.AOB_SECRETS_KEYS):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            errors.append(Error(f"AOB_SECRETS_KEYS item {index} is not a Fernet key (32 url-safe base64 bytes)",
                                id="vault.E001"))
    return errors
