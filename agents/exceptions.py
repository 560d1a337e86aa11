from aob_project.exceptions import AobError


class BudgetExceeded(AobError):
    code = "BudgetExceeded"


class SecurityError(AobError):
    code = "SecurityError"


class LLMNotConfigured(AobError):
    code = "LLMNotConfigured"


class ToolError(AobError):
    """A tool call the model got wrong; the message goes back to the model as the tool result."""

    code = "tool_error"
