from django.apps import AppConfig


class TriggersConfig(AppConfig):
    name = "triggers"
    verbose_name = "Triggers (schedules and webhooks)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from triggers.signals import schedule_deleted
        from vault.crypto import ENCRYPTED_FIELDS

        ENCRYPTED_FIELDS.append(("triggers.Hook", "secret_ciphertext"))
        ENCRYPTED_FIELDS.append(("triggers.Hook", "previous_secret_ciphertext"))
        post_delete.connect(schedule_deleted, sender="triggers.Schedule", dispatch_uid="triggers.schedule_deleted")
