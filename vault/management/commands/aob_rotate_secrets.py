"""Re-encrypt every stored secret (and webhook signing secret) with the first key of AOB_SECRETS_KEYS."""

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Re-encrypt secrets with the first AOB_SECRETS_KEYS key, after a new key was put first."

    def handle(self, *args, **options) -> None:
        from vault.crypto import rotate_all

        unreadable = []
        for label, rotated in rotate_all().items():
            self.stdout.write(f"{label}: {rotated.count} re-encrypted")
            if rotated.unreadable:
                shown = ", ".join(str(pk) for pk in rotated.unreadable[:20])
                more = f" and {len(rotated.unreadable) - 20} more" if len(rotated.unreadable) > 20 else ""
                unreadable.append(f"{label} {shown}{more}")
        if unreadable:
            # the rest is re-encrypted; these stay as they were, for the key that made them
            raise CommandError(f"no key in AOB_SECRETS_KEYS decrypts {'; '.join(unreadable)}: put the key that "
                               "encrypted them back (last) and run this again, or set those secrets again")
