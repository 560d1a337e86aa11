from django.apps import AppConfig


class TriggersConfig(AppConfig):
    name = "triggers"
    verbose_name = "Triggers (schedules and webhooks)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from vault.crypto import ENCRYPTED_FIELDS

        ENCRYPTED_FIELDS.append(("triggers.Hook", "secret_ciphertext"))
