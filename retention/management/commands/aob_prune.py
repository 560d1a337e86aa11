"""``manage.py aob_prune [--dry-run]``: what the retention beat task does, now."""

import json

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Remove finished runs past retention, unreferenced artifacts, old delivery ids and firings."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count what would go; remove nothing")

    def handle(self, *args, **options) -> None:
        from retention.services import prune

        self.stdout.write(json.dumps(prune(dry_run=options["dry_run"]), indent=2))
