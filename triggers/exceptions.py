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
