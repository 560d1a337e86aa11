from aob_project.exceptions import NotFound, ValidationFailed
from workflows.registry import NodeFailed


class SecretNotFound(NotFound):
    code = "secret_not_found"


class SecretInvalid(ValidationFailed):
    code = "validation_error"


class SecretMissing(NodeFailed):
    """A node refers to a secret its run's owner has not set: a person must set it, then replay."""

    code = "SecretMissing"
