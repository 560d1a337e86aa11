"""Re-encrypt every stored secret (and webhook signing secret) with the first key of AOB_SECRETS_KEYS."""

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Re-encrypt secrets with the first AOB_SECRETS_KEYS key, after a new key was put first."

    def handle(self, *args, **options) -> None:
        from vault.crypto import rotate_all

        for label, count in rotate_all().items():
            self.stdout.write(f"{label}: {count} re-encrypted")
