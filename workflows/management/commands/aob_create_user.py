"""Create (or update) a user and print an API token: ``manage.py aob_create_user NAME``."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.authtoken.models import Token

from aob_project.exceptions import AobError
from workflows.services.users import user_get_or_create


class Command(BaseCommand):
    help = "Create a user (or reset its password) and print its API token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--password", default=None, help="set this password (default: unusable)")
        parser.add_argument("--staff", action="store_true", help="may use the Django admin")
        parser.add_argument("--superuser", action="store_true")

    def handle(self, *args: Any, username: str, password: str | None, staff: bool, superuser: bool,
               **options: Any) -> None:
        if password is not None:
            try:  # as the admin's forms hold a password (AUTH_PASSWORD_VALIDATORS), before anything is made
                validate_password(password, User(username=username))
            except ValidationError as exc:
                raise CommandError("--password: " + " ".join(exc.messages)) from None
        try:
            user, created = user_get_or_create(username=username)
        except AobError as exc:
            raise CommandError(exc.message) from None
        if password:
            user.set_password(password)
        elif created:
            user.set_unusable_password()
        user.is_staff = user.is_staff or staff or superuser
        user.is_superuser = user.is_superuser or superuser
        user.save()
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
