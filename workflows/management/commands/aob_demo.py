"""Set up the demo: a demo user (admin too, with a password of its own, never a published one), its
token, and the example workflows."""

from __future__ import annotations

import json
import os
import secrets
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
        username = os.environ.get("AOB_DEMO_USER") or "demo"  # empty: the default, as the launcher's banner reads it
        # never a published default: 127.0.0.1 is every account's of the machine. ``make up`` passes
        # the one it keeps in its data folder; run by itself, a new user gets a new one, shown once
        password = os.environ.get("AOB_DEMO_PASSWORD", "")
        try:
            user, created = user_get_or_create(username=username)
        except AobError as exc:
            if exc.code == "name_left":  # renamed or deleted in /admin/: the name is no one's again
                self.stderr.write(f"no demo user: {exc.message}; set AOB_DEMO_USER to another name for one")
                return
            raise CommandError(f"AOB_DEMO_USER: {exc.message}") from None
        if not password and (created or not user.password or not user.has_usable_password()):
            password = secrets.token_urlsafe(24)
        if password and not user.check_password(password):  # the same one again is no change: the
            user.set_password(password)  # demo's API token would end at every start (authentication.py)
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
        if password and not os.environ.get("AOB_DEMO_PASSWORD"):
            self.stdout.write(f"Demo login: {username} / {password}  (web UI and /admin/; shown this once)")
        else:
            self.stdout.write(f"Demo login: {username}  (web UI and /admin/; the password "
                              f"{'in AOB_DEMO_PASSWORD' if password else 'unchanged'})")
        self.stdout.write(f"API token:  {token.key}")
        self.stdout.write(f"Examples:   {', '.join(loaded) or 'none'}")
