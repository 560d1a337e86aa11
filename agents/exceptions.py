from aob_project.exceptions import AobError


class BudgetExceeded(AobError):
    code = "BudgetExceeded"


class OwnerBudgetExceeded(BudgetExceeded):
    """The owner's spend for the day (AOB_OWNER_DAILY_COST_USD) would be passed."""

    code = "OwnerBudgetExceeded"


class BudgetPaused(AobError):
    """The run's ceiling would be passed: the node waits until its owner raises the run's budget."""

    code = "BudgetPaused"


class BudgetUnraisable(AobError):
    """The run's ceiling would be passed, and its owner, who alone raises it, is deactivated: a
    pause would wait for a raise that cannot come, so the node fails instead (as a run start or a
    ``workflow`` node of a deactivated owner does)."""

    code = "owner_inactive"


class ModelNotPriced(AobError):
    code = "ModelNotPriced"


class SecurityError(AobError):
    code = "SecurityError"


class LLMNotConfigured(AobError):
    code = "LLMNotConfigured"


class ToolError(AobError):
    """A tool call the model got wrong; the message goes back to the model as the tool result."""

    code = "tool_error"
