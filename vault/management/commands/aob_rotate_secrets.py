"""Re-encrypt every stored secret (and webhook signing secret) with the first key of AOB_SECRETS_KEYS."""

from django.core.management.base import BaseCommand, CommandError

ORDER = ("every web and worker process must run with the new key first and the old one after it "
         "(AOB_SECRETS_KEYS=<new>,<old>) before this command, and be restarted with the new key alone only "
         "after it (docs/SECURITY.md, Secrets)")


class Command(BaseCommand):
    help = "Re-encrypt secrets with the first AOB_SECRETS_KEYS key, after every process was restarted with it first."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--force", action="store_true",
            help="Re-encrypt even though running processes do not hold this key first, or nobody can say (Redis "
                 "away): those processes then cannot read a secret, and a secret they set is lost with the old key, "
                 "until each is restarted with this key first.")

    def handle(self, *args, force: bool = False, **options) -> None:
        from vault.crypto import rotate_all

        self._refuse_while_a_process_lacks_the_key(force)
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

    def _refuse_while_a_process_lacks_the_key(self, force: bool) -> None:
        """Re-encrypting under a key a running process does not hold first leaves it unable to read
        every secret (nodes fail ``SecretUnreadable``, hooks answer 401), and one that holds the old
        key first goes on encrypting under the key about to be dropped (``vault.processes``)."""
        import redis

        from vault import processes

        first = processes.held()[0]
        self.stdout.write(f"this command's keys: {', '.join(processes.held())} (re-encrypting under {first})")
        try:
            seen = processes.holders()
        except redis.RedisError as exc:
            if force:
                self.stderr.write(f"--force: which keys the running processes hold is unknown ({exc})")
                return
            raise CommandError(f"cannot tell which keys the running processes hold (Redis: {exc}); {ORDER}. "
                               "Run this again once Redis answers, or with --force") from exc
        for holder in seen:
            self.stdout.write(f"{holder.process}: keys {', '.join(holder.keys)}")
        if not seen:
            self.stdout.write("no running web or worker process recorded its keys in the last "
                              f"{processes.KEPT_S} s")
        behind = [holder.process for holder in seen if holder.keys[:1] != [first]]
        if behind and not force:
            raise CommandError(f"{len(behind)} running process(es) do not hold {first} first: {'; '.join(behind)}. "
                               f"Nothing was re-encrypted: {ORDER}. A process stopped without a word is forgotten "
                               f"{processes.KEPT_S} s after its last record; --force re-encrypts anyway")
        if behind:
            self.stderr.write(f"--force: {len(behind)} running process(es) do not hold {first} first")
