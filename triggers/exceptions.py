from aob_project.exceptions import AobError, Forbidden, NotFound, ValidationFailed


class ScheduleInvalid(ValidationFailed):
    code = "validation_error"


class ScheduleNotFound(NotFound):
    code = "not_found"


class HookNotFound(NotFound):
    code = "not_found"


class NotHookOwner(Forbidden):
    code = "not_hook_owner"


class HookUnauthorized(AobError):
    """Any reason a delivery is not accepted as the hook's: the answer never says which."""

    code = "unauthorized"
    status = 401


# Refusals of a start that pass within a minute or so: the owner's rate limit (429), Redis away (503).
PASSING = (429, 503)


class StartHeld(AobError):
    """A schedule's start held back by a refusal that passes (``PASSING``), for its firing to be
    tried again, the same firing, when ``retry_after_seconds`` says."""

    code = "start_held"
    status = 429
