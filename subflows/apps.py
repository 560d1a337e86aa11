from django.apps import AppConfig


class SubflowsConfig(AppConfig):
    name = "subflows"
    verbose_name = "Sub-workflows"
    default_auto_field = "django.db.models.BigAutoField"
