from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

# From a day to a century (aob_project/settings.py says why), as for AOB_RETENTION_DAYS
DAYS_MIN, DAYS_MAX = settings.AOB_RETENTION_DAYS_RANGE
DAYS_RULE = f"from {DAYS_MIN} to {DAYS_MAX} days"


class RetentionPolicy(models.Model):
    """How long one owner's finished runs are kept (else ``AOB_RETENTION_DAYS``). The range holds
    in the database, whoever writes the row; the validators name it in the admin's form."""

    owner = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    days = models.PositiveIntegerField(validators=[MinValueValidator(DAYS_MIN), MaxValueValidator(DAYS_MAX)],
                                       help_text=DAYS_RULE)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "retention policies"
        constraints = [models.CheckConstraint(condition=models.Q(days__gte=DAYS_MIN, days__lte=DAYS_MAX),
                                              name="retention_policy_days_range",
                                              violation_error_message=f"days must be {DAYS_RULE}")]

    def __str__(self) -> str:
        return f"{self.owner}: {self.days} days"
