from aob_project.exceptions import NotFound, ValidationFailed
from workflows.registry import NodeFailed


class SecretNotFound(NotFound):
    code = "secret_not_found"


class SecretInvalid(ValidationFailed):
    code = "validation_error"


class SecretMissing(NodeFailed):
    """A node refers to a secret its run's owner has not set: a person must set it, then replay."""

    code = "SecretMissing"


class SecretUnreadable(NodeFailed):
    """A secret encrypted under a key no longer in ``AOB_SECRETS_KEYS``: the operator must put that key
    back (last) and run ``aob_rotate_secrets``, or the owner set the secret again."""

    code = "SecretUnreadable"
