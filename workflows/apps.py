from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from functools import partial

        from django.contrib.auth.models import Group, User
        from django.contrib.auth.signals import user_logged_in
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_delete, post_save, pre_save

        from workflows.api.authentication import password_change_noted, token_ends_with_account
        from workflows.approvers import name_left
        from workflows.engine.locks import bound_frozen_holders
        from workflows.ratelimit import login_remembered_from_request

        for model in (User, Group):  # a name its holder leaves is given to no one else
            pre_save.connect(name_left, sender=model, dispatch_uid=f"workflows.name_left.{model.__name__}")
            post_delete.connect(partial(name_left, signal_name="deleted"), sender=model, weak=False,
                                dispatch_uid=f"workflows.name_deleted.{model.__name__}")
        # a deactivated account's API token ends with it (re-activation does not bring it back), and
        # with a password changed
        pre_save.connect(password_change_noted, sender=User, dispatch_uid="workflows.password_change_noted")
        post_save.connect(token_ends_with_account, sender=User, dispatch_uid="workflows.token_ends_with_account")
        # a process frozen holding a lock holds it for a bounded time (AOB_DB_IDLE_IN_TRANSACTION_S)
        connection_created.connect(bound_frozen_holders, dispatch_uid="workflows.bound_frozen_holders")
        # an address a user logged in from is theirs: a guesser cannot lock them out of it
        user_logged_in.connect(login_remembered_from_request, dispatch_uid="workflows.login_remembered")
