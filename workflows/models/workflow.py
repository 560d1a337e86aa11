from __future__ import annotations

from django.conf import settings
from django.db import models

from .artifact import Artifact

# What a tag may be: the API's fields and a ``workflow`` node's config (``subflows.nodetypes``) alike.
TAG_MAX_CHARS = 200
TAG_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_.\-]{{0,{TAG_MAX_CHARS - 1}}}$"
# ... in words, as a refusal says it (the API's fields and the service's check alike)
TAG_RULE = ("a tag is letters, digits, _ . and -, starting with a letter or digit, "
            f"at most {TAG_MAX_CHARS} characters")
RESERVED_TAGS = frozenset({"validate"})  # POST /workflows/validate is an operation, not a tag's
DESCRIPTION_MAX_CHARS = 10_000  # a version's description


class Workflow(models.Model):
    """A tag: a name owned by a user that points at the newest version of a definition."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workflows")
    tag = models.CharField(max_length=200)
    current_version = models.ForeignKey(
        "WorkflowVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "tag"], name="workflow_owner_tag_unique")]
        ordering = ["tag"]

    def __str__(self) -> str:
        return self.tag


class WorkflowVersion(models.Model):
    """One link of a tag's version chain; ``seq`` 0 is the first version, unless the tag was deleted
    before (``DeletedTag``)."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    seq = models.PositiveIntegerField()
    artifact = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="+")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    # What a list shows of the definition, taken from it once at save: a list of workflows or a
    # search reads these, never a definition (each up to AOB_MAX_DEFINITION_BYTES, and an owner's
    # workflows are not counted). Never changed: a version's artifact is fixed.
    nodes_count = models.PositiveIntegerField(default=0)
    edges_count = models.PositiveIntegerField(default=0)
    metadata_name = models.TextField(blank=True, default="")
    metadata_description = models.TextField(blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workflow", "seq"], name="workflow_version_seq_unique")]
        ordering = ["workflow_id", "seq"]

    def __str__(self) -> str:
        return f"{self.workflow.tag}@{self.seq}"


class DeletedTag(models.Model):
    """The highest version a tag had when it was deleted, kept after its versions are gone: the tag
    made again numbers its versions after it (``services.definitions._first_seq`` says why)."""

    # No index of its own for ``owner``: ``deleted_tag_owner_tag_unique`` leads with it.
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    tag = models.CharField(max_length=200)
    last_seq = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "tag"], name="deleted_tag_owner_tag_unique")]

    def __str__(self) -> str:
        return f"{self.tag} (deleted at version {self.last_seq})"
