"""Set up the demo: a demo user (admin too), its token, and the example workflows."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token

from aob_project.exceptions import AobError
from workflows.services.definitions import workflow_save
from workflows.services.users import user_get_or_create

EXAMPLES = Path(settings.BASE_DIR) / "examples"


class Command(BaseCommand):
    help = "Create the demo user and load the example workflows (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:  # a staff user with a published password
            raise CommandError("aob_demo refuses to run in production mode (AOB_PRODUCTION): it creates a staff "
                               "user with a known password")
        username = os.environ.get("AOB_DEMO_USER", "demo")
        password = os.environ.get("AOB_DEMO_PASSWORD", "demo-password")
        try:
            user, _ = user_get_or_create(username=username)
        except AobError as exc:
            raise CommandError(exc.message) from None
        user.set_password(password)
        user.is_staff = user.is_superuser = True
        user.save()
        token, _ = Token.objects.get_or_create(user=user)
        loaded = []
        for path in sorted(EXAMPLES.glob("*.json")):
            definition = json.loads(path.read_text())
            try:
                workflow_save(owner=user, tag=path.stem, definition=definition, description="example")
                loaded.append(path.stem)
            except AobError as exc:
                self.stderr.write(f"example {path.name} is invalid: {exc.message}")
        self.stdout.write(f"Demo login: {username} / {password}  (web UI and /admin/)")
        self.stdout.write(f"API token:  {token.key}")
        self.stdout.write(f"Examples:   {', '.join(loaded) or 'none'}")
