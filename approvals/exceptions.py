from aob_project.exceptions import Conflict, Forbidden, NotFound, ValidationFailed


class ApprovalSettled(Conflict):
    code = "approval_settled"


class ActionChanged(Conflict):
    """A vote names the action it was cast on (``action_digest``), and a patch has changed it since."""

    code = "action_changed"


class AmbiguousNode(Conflict):
    """A run's node named where several of its approvals wait (a gate in a loop): decide one by id."""

    code = "ambiguous"


class AlreadyDecided(Conflict):
    code = "already_decided"


class NotAnApprover(Forbidden):
    code = "not_an_approver"


class FourEyesViolation(Forbidden):
    code = "four_eyes_violation"


class ApprovalNotFound(NotFound):
    code = "not_found"


class FormDataInvalid(ValidationFailed):
    code = "invalid_form_data"


class CommentInvalid(ValidationFailed):
    code = "invalid_comment"
