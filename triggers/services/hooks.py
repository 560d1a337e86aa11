"""Webhooks: ``POST /api/v1/hooks/{id}`` starts a run of the hook's workflow.

The sender signs ``"{timestamp}.{body}"`` with HMAC-SHA256 and the hook's secret (the convention of
Stripe; GitHub's ``sha256=`` prefix), and sends::

    X-AOB-Timestamp: <unix seconds>
    X-AOB-Signature: sha256=<hex digest>
    X-AOB-Delivery:  <the sender's id of this delivery>

A timestamp more than ``AOB_HOOK_TOLERANCE_S`` (5 minutes) from now, a signature that does not
match (compared in constant time), an unknown or disabled hook: all are the same 401, which says
nothing of why. After a rotation the secret it replaced still signs for a grace period
(``AOB_HOOK_SECRET_GRACE_S``, 24 h, or less as the rotation asks), so a sender's retries signed
before it still land; every delivery is checked against two secrets, a random one standing in for
one there is not, so an unknown hook and one never rotated take the same steps. The delivery id and the signature are unique per hook: a sender's retry, or
someone replaying a captured request within the tolerance, answers with the first run and starts
nothing new; it stays counted as an anonymous request of its address (a replay's signature proves
only that someone once saw the request), where a new delivery is taken out of that count. The
delivery id is not signed (the scheme is Stripe's, which senders already use): a signature is bound
to the delivery id it first came with while its timestamp can be fresh, accepted or refused, so a
refused delivery's bytes under another id are a replay's 401, not another event. Inputs are the request's JSON object, or what the hook's mapping makes of it: a CEL
expression over ``body`` and ``headers`` that evaluates to an object, or a JSON template whose
``$inputs.<path>`` references read the body (an object body itself; any other under ``body``).

A delivery refused after it proved itself the hook's is recorded for the owner (``HookRefusal``:
when, the delivery id, what the sender was told; never the body), each hook's latest
``AOB_HOOK_REFUSALS_KEPT``; one refused before that (the 401s) writes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any, TypeGuard

import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from aob_project import redis_client
from aob_project.decimal_text import bounded_decimal
from aob_project.exceptions import AobError, NotFound, ValidationFailed
from vault import crypto
from workflows import ratelimit
from workflows.api.parsers import BodyRejected, loads_strict
from workflows.definition.expressions import ExpressionError, compile_expression, evaluate
from workflows.definition.references import WHOLE, ConfigTooLarge, resolve
from workflows.engine.outputs import strict_json
from workflows.limits import refuse_more, refuse_past, unstorable
from workflows.models import Run, Workflow, WorkflowVersion, canonical_json, size_of
from workflows.services.definitions import workflow_lock_for_use, workflow_version_for_start

from ..exceptions import PASSING, HookNotFound, HookUnauthorized, NotHookOwner
from ..models import Hook, HookDelivery, HookRefusal
from . import trigger_owner_check

logger = logging.getLogger(__name__)

_DUMMY_SECRET = secrets.token_bytes(32)  # unknown hooks take the same path (and time) as known ones
MAX_DELIVERY_ID = 200


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


# A hook is listed with its mapping (``GET /api/v1/hooks``), at most AOB_MAX_HOOKS_PER_OWNER of them.
MAPPING_MAX_BYTES = 64 * 1024
# What a template's ``$inputs`` is (``_template_inputs``), said wherever a template is refused or made no object.
TEMPLATE_READS = "$inputs is the body when it is a JSON object, else {\"body\": <the body>} ($inputs.body)"


def mapping_check(mapping: Any) -> dict[str, Any] | None:
    if mapping is None:
        return None
    refuse_past(mapping, MAPPING_MAX_BYTES, field="mapping")
    if not isinstance(mapping, dict) or len(mapping) != 1 or next(iter(mapping)) not in ("cel", "template"):
        raise ValidationFailed('mapping is {"cel": "<expression>"} or {"template": <JSON>}',
                               extra={"field": "mapping", "rule": "mapping_shape"})
    template = mapping.get("template")
    if "template" in mapping and not (isinstance(template, dict) or (isinstance(template, str)
                                                                     and WHOLE.match(template.strip()))):
        # a run's inputs are an object: a number, a list or text made none, and refused every delivery
        raise ValidationFailed(f'mapping.template makes a run\'s inputs: a JSON object ({{"order": "$inputs.id"}}), '
                               f'or one whole reference to one ("$inputs.order"); {TEMPLATE_READS}',
                               extra={"field": "mapping.template", "rule": "type"})
    if "cel" in mapping:
        if not isinstance(mapping["cel"], str) or not mapping["cel"].strip():
            raise ValidationFailed("mapping.cel is a CEL expression", extra={"field": "mapping.cel", "rule": "type"})
        try:  # its bounds are every expression's (AOB_CEL_MAX_SOURCE_BYTES, ...)
            compile_expression(mapping["cel"])
        except ExpressionError as exc:
            raise ValidationFailed(f"mapping.cel: {exc}", extra={"field": "mapping.cel", "rule": exc.named("cel")}
                                   ) from None
    return mapping


def hook_create(*, owner: User, workflow: Workflow, name: str = "", mapping: Any = None,
                enabled: bool = True) -> tuple[Hook, str]:
    """A new hook and its signing secret, which is shown this once."""
    trigger_owner_check(owner, workflow, what="hook")
    secret = new_secret()
    mapping = mapping_check(mapping)
    with transaction.atomic():
        workflow = workflow_lock_for_use(workflow=workflow)  # first: the tag's delete takes it before the owner's row
        User.objects.select_for_update().filter(pk=owner.pk).first()  # one owner's creations in turn: the count holds
        refuse_more(Hook.objects.filter(owner=owner), setting="AOB_MAX_HOOKS_PER_OWNER", what="hooks", field="hooks",
                    rule="max_hooks")
        hook = Hook.objects.create(id="hk_" + secrets.token_urlsafe(16), owner=owner, workflow=workflow,
                                   name=name, secret_ciphertext=crypto.encrypt(secret), mapping=mapping,
                                   enabled=enabled)
    logger.info("hook.created", extra={"hook_id": hook.pk, "tag": workflow.tag})
    return hook, secret


def hook_update(*, hook: Hook, **changes: Any) -> Hook:
    """Change the fields of ``changes``; a hook deleted meanwhile (its update waited on the delete's
    lock) is the hook's 404, as a request a moment later gets, not Django's "did not affect any rows"."""
    if "mapping" in changes:
        changes["mapping"] = mapping_check(changes["mapping"])
    with transaction.atomic():  # locked as a rotation is: a delivery being accepted finishes first (_still_signed)
        if changes and Hook.objects.select_for_update().filter(pk=hook.pk).first() is None:
            raise HookNotFound("hook not found")
        Hook.objects.filter(pk=hook.pk).update(**changes)
    for key, value in changes.items():
        setattr(hook, key, value)
    return hook


def hook_rotate(*, hook: Hook, grace_s: int | None = None) -> str:
    """A new signing secret, shown this once. The one it replaces still signs for ``grace_s``
    seconds (by default, and at most, ``AOB_HOOK_SECRET_GRACE_S``), so a sender's retries signed
    before the rotation still land; 0 cuts it off now (a secret that leaked). Only the secret just
    replaced: one that still signed from a rotation before stops now."""
    ceiling = settings.AOB_HOOK_SECRET_GRACE_S
    grace = ceiling if grace_s is None else grace_s
    if grace < 0:
        raise ValidationFailed("grace_s is the seconds the previous secret still signs: 0 or more",
                               extra={"field": "grace_s", "rule": "minimum", "limit": 0})
    if grace > ceiling:
        raise ValidationFailed(f"grace_s is at most {ceiling} seconds (AOB_HOOK_SECRET_GRACE_S)",
                               extra={"field": "grace_s", "rule": "max_grace", "limit": ceiling})
    secret = new_secret()
    with transaction.atomic():  # two rotations in turn: each replaces the secret the other left
        replaced = Hook.objects.select_for_update().filter(pk=hook.pk).values_list("secret_ciphertext", flat=True)
        current = replaced.first()
        if current is None:
            raise HookNotFound("hook not found")
        changes = {"secret_ciphertext": crypto.encrypt(secret),
                   "previous_secret_ciphertext": current if grace else "",
                   "previous_secret_expires_at": timezone.now() + timedelta(seconds=grace) if grace else None}
        Hook.objects.filter(pk=hook.pk).update(**changes)
    for field, value in changes.items():
        setattr(hook, field, value)
    logger.info("hook.secret_rotated", extra={"hook_id": hook.pk, "grace_s": grace})
    return secret


def previous_secret_expiry(hook: Hook) -> Any:
    """When the secret the last rotation replaced stops signing; None if it no longer does."""
    expires = hook.previous_secret_expires_at
    if not hook.previous_secret_ciphertext or expires is None or expires <= timezone.now():
        return None
    return expires


def is_hook_owner(hook: Hook, *, user: User) -> bool:
    """Who may remove a hook: its owner only, staff included, on every surface (as a run's
    changes are its owner's: ``workflows.selectors.is_run_owner``)."""
    return hook.owner_id == user.pk


def hook_delete(*, hook: Hook, user: User) -> None:
    """Remove ``hook`` as ``user``, who must be its owner. Its deliveries go with it (cascade) and
    its secret lived only in its row, so nothing is left to clean up elsewhere; the runs it
    started stay. A delivery to it afterwards is the 401 of an unknown hook."""
    if not is_hook_owner(hook, user=user):
        raise NotHookOwner("only the hook's owner may delete it", extra={"hook_id": hook.pk, "rule": "hook_owner"})
    with transaction.atomic():
        Hook.objects.filter(pk=hook.pk).delete()
    logger.info("hook.deleted", extra={"hook_id": hook.pk})


def signature_for(secret: str | bytes, timestamp: str, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Accepted:
    run: Run | None
    duplicate: bool


@cache
def _dummy_token() -> str:
    return crypto.encrypt(secrets.token_urlsafe(32))


def _signing_secret(token: str, hook: Hook | None) -> bytes:
    """The secret ``token`` holds, or a random key where there is none ("": an unknown hook, no
    previous secret), decrypted alike so that every path takes the same steps. One under a key
    dropped from AOB_SECRETS_KEYS (rotated out before ``aob_rotate_secrets`` ran) authenticates
    nothing, as an unknown hook, and the operator is told."""
    try:
        value = crypto.decrypt(token or _dummy_token())
    except crypto.InvalidToken:
        if token:
            logger.error("hook.secret_unreadable", extra={"hook_id": hook.pk if hook else None})
        return _DUMMY_SECRET
    return value.encode() if token else _DUMMY_SECRET


def hook_deliver(*, hook_id: str, timestamp: str | None, signature: str | None, delivery_id: str | None,
                 body: bytes, headers: dict[str, str] | None = None,
                 authenticated: Callable[[], None] | None = None) -> Accepted:
    """Authenticate one delivery and start its run, once. ``authenticated()`` is called once the
    delivery has proved itself a new one of the hook's (the view then no longer counts it as
    anonymous): a repeat of one seen before, or one whose delivery id is refused, stays counted,
    since a replay's signature proves only that someone once saw the request."""
    hook = Hook.objects.select_related("owner", "workflow__current_version").filter(pk=hook_id).first()
    given = (signature or "").removeprefix("sha256=").strip().lower()
    expected = _matched(hook, given, timestamp or "", body)
    fresh = _fresh(timestamp)
    if not (expected and fresh and hook is not None and hook.enabled):
        if expected and fresh and hook is not None and _delivery_id_valid(delivery_id) \
                and _delivered(hook, delivery_id, expected) is None:
            # a sender's signed delivery to a paused hook: the same 401 (or 429 past the hook's own
            # limit), counted against the hook, not its address (a sender's address is many tenants')
            _admit(hook, delivery_id, expected, authenticated)
        logger.info("hook.refused", extra={"hook_id": str(hook_id)[:40]})  # never why
        raise HookUnauthorized("the request could not be authenticated")
    try:
        return _accept(hook, delivery_id, expected, body, headers or {}, given=given, timestamp=timestamp or "",
                       authenticated=authenticated)
    except HookUnauthorized:  # the hook went during the delivery: nothing of it is left to record against
        raise
    except AobError as exc:
        if exc.status not in PASSING:  # a refusal that passes (the owner's limit) is the owner's to count again
            _refused_remember(hook, expected)
        _refusal_record(hook, delivery_id, exc)
        raise


def _matched(hook: Hook | None, given: str, timestamp: str, body: bytes) -> str:
    """The signature ``given`` matched, by the hook's secret or by the one its last rotation
    replaced while that still signs; "" if neither (an unknown hook takes the same steps)."""
    secret = _signing_secret(hook.secret_ciphertext if hook else "", hook)
    previous = _signing_secret(hook.previous_secret_ciphertext if hook else "", hook)
    expected = signature_for(secret, timestamp, body)
    by_previous = signature_for(previous, timestamp, body)
    valid = hmac.compare_digest(given.encode(), expected.encode())
    valid_previous = hmac.compare_digest(given.encode(), by_previous.encode())
    in_grace = hook is not None and previous_secret_expiry(hook) is not None
    if valid_previous and in_grace and not valid:  # the signature kept against replays is the one that matched
        logger.info("hook.signed_with_previous_secret", extra={"hook_id": hook.pk if hook else None})
        return by_previous
    return expected if valid else ""


_SIGNING = ("enabled", "secret_ciphertext", "previous_secret_ciphertext", "previous_secret_expires_at")
_HOLD = ("SELECT enabled, secret_ciphertext, previous_secret_ciphertext, previous_secret_expires_at, mapping::text "
         "FROM triggers_hook WHERE id = %s FOR KEY SHARE")


def _still_signed(hook: Hook, given: str, timestamp: str, expected: str, body: bytes) -> str:
    """In the transaction that starts the delivery's run: hold the hook's row (``FOR KEY SHARE``:
    the lock a rotation, a disable, an update or a delete must wait for; deliveries still take turns
    only at the end, on the hook's ``last_delivery_at``) until the run commits, and judge the
    delivery again if the row changed since it was read. Before, a delivery judged by a secret that
    a rotation with ``grace_s`` 0 cut off (a leaked one) while it was accepted started its run after
    the rotation had answered; now the rotation waits for it, or it is judged by the secrets the
    rotation left. The signature that matched, or refused; ``hook.mapping`` is set to the mapping
    the row holds now (an update that changed it meanwhile has answered: its mapping makes the
    run's inputs, as a schedule's firing reads the inputs an update left, ``schedules._held``)."""
    with connection.cursor() as cursor:
        cursor.execute(_HOLD, [hook.pk])
        row = cursor.fetchone()
    if row is None:
        logger.info("hook.refused", extra={"hook_id": hook.pk})  # never why
        raise HookUnauthorized("the request could not be authenticated")
    signing, mapping = row[:-1], row[-1]
    hook.mapping = json.loads(mapping) if mapping is not None else None
    if signing == tuple(getattr(hook, field) for field in _SIGNING):
        return expected
    now = Hook(pk=hook.pk, **dict(zip(_SIGNING, signing, strict=True)))
    again = _matched(now, given, timestamp, body) if now.enabled else ""
    if not again:
        logger.info("hook.refused", extra={"hook_id": hook.pk})  # never why
        raise HookUnauthorized("the request could not be authenticated")
    return again


def _accept(hook: Hook, delivery_id: str | None, expected: str, body: bytes, headers: dict[str, str], *,
            given: str, timestamp: str, authenticated: Callable[[], None] | None = None) -> Accepted:
    """The authenticated delivery's run, started once; an AobError says why not."""
    if not _delivery_id_valid(delivery_id):
        raise ValidationFailed(f"X-AOB-Delivery is the sender's id of this delivery: 1 to {MAX_DELIVERY_ID} "
                               "printable characters", code="invalid_delivery_id",
                               extra={"field": "X-AOB-Delivery", "rule": "delivery_id"})
    # a repeat (a sender's retry, a captured request replayed) is answered before the owner's limit
    # is spent on it: replays of one delivery would otherwise refuse the owner's real ones
    first = _delivered(hook, delivery_id, expected)
    if first is not None:
        return first
    _admit(hook, delivery_id, expected, authenticated)
    read = hook.mapping
    inputs = _inputs(hook, body, headers)
    try:
        with transaction.atomic():
            # the tag first (as its delete takes it, then the hook), then the hook: the version a save
            # committed meanwhile is the one that runs, or the save waits for this run
            version = _version(hook)
            expected = _still_signed(hook, given, timestamp, expected, body)
            if hook.mapping != read:  # changed while this delivery was judged, by an update that has answered
                inputs = _inputs(hook, body, headers)
            delivery = HookDelivery.objects.create(hook=hook, delivery_id=delivery_id, signature=expected)
            run = _start(hook, version, inputs, delivery_id)
            HookDelivery.objects.filter(pk=delivery.pk).update(run=run)
            Hook.objects.filter(pk=hook.pk).update(last_delivery_at=timezone.now())
    except IntegrityError:  # the same delivery, accepted by another request meanwhile
        first = _delivered(hook, delivery_id, expected)
        if first is None:  # not a repeat: the hook (or its workflow) was deleted during the delivery
            logger.info("hook.refused", extra={"hook_id": hook.pk})
            raise HookUnauthorized("the request could not be authenticated") from None
        return first
    logger.info("hook.delivered", extra={"hook_id": hook.pk, "run_id": str(run.pk)})
    return Accepted(run=run, duplicate=False)


def _delivery_id_valid(delivery_id: str | None) -> TypeGuard[str]:
    return bool(delivery_id and len(delivery_id) <= MAX_DELIVERY_ID and delivery_id.isprintable())


def _admit(hook: Hook, delivery_id: str, expected: str, authenticated: Callable[[], None] | None) -> None:
    """A signed delivery under a valid id, not a repeat of one accepted, to an enabled hook or a
    paused one alike: bound to its id, then counted against its owner's limit (before the mapping
    costs anything; a paused hook's against a limit of its own), or raises why not."""
    # the delivery id is not signed: a signature seen before under another id (a refused delivery's
    # captured bytes, sent again as another event) is a replay, answered before it is judged again
    bound = _first_seen(hook.pk, expected, delivery_id)
    if bound is None:
        logger.info("hook.refused", extra={"hook_id": hook.pk})  # never why
        raise HookUnauthorized("the request could not be authenticated")
    # a new delivery: its address no longer counts it (a sender delivers many tenants' hooks), its
    # owner does; a repeat (of one accepted, answered before, or of one refused) stays its address's
    # to count, so replays of a captured request are bounded by that limit and spend none of the
    # owner's. A repeat of a refused one is judged again: the owner may have fixed the cause.
    if _refused_before(hook.pk, expected):
        return
    if authenticated is not None:
        authenticated()
    paused = None if hook.enabled else hook.pk  # a paused hook's deliveries spend none of the owner's limit
    try:
        ratelimit.check_hook_delivery(owner_id=hook.owner_id, paused_hook=paused)
    except ratelimit.RateLimited:
        # its binding (against its bytes replayed under the sender's next id) is kept as long as the
        # limit would have let as many through; past that, nothing of it stays in Redis
        if bound and not ratelimit.hook_refusal_kept(owner_id=hook.owner_id, paused_hook=paused):
            _unbind(hook.pk, expected)
        raise


_REFUSAL_MESSAGE_CHARS = 2000
_REFUSAL_DETAILS_BYTES = 4096


def _refused_key(hook_id: str, signature: str) -> str:
    return f"aob:hook:{hook_id}:refused-signature:{signature}"


def _refused_remember(hook: Hook, signature: str) -> None:
    """Remember that the delivery signed ``signature`` was refused, for as long as its timestamp
    can be fresh (the tolerance either side, and a minute), so a repeat of it is known as one."""
    try:
        redis_client.shared(ratelimit.TIMEOUT_S).set(_refused_key(hook.pk, signature), 1,
                                                     ex=2 * settings.AOB_HOOK_TOLERANCE_S + 60)
    except redis.RedisError:  # then a repeat counts as new, against the owner, as before
        logger.warning("hook.refusal_remember_failed", extra={"hook_id": hook.pk})


def _first_seen(hook_id: str, signature: str, delivery_id: str) -> bool | None:
    """Whether the delivery signed ``signature`` is seen for the first time: its signature is then
    bound to ``delivery_id`` for as long as its timestamp can be fresh (the tolerance either side,
    and a minute). None if it came before under another delivery id (a replay: the delivery id is
    not signed); False if it came before under this one, or Redis is away (nothing is bound)."""
    key, value = _bound_key(hook_id, signature), delivery_id.encode(errors="backslashreplace")
    client = redis_client.shared(ratelimit.TIMEOUT_S)
    try:
        if client.set(key, value, nx=True, ex=2 * settings.AOB_HOOK_TOLERANCE_S + 60):
            return True
        first = client.get(key)
    except redis.RedisError:  # then a signature is judged under any delivery id, as before
        logger.warning("hook.signature_bind_failed", extra={"hook_id": hook_id})
        return False
    return False if first is None or first == value else None


def _unbind(hook_id: str, signature: str) -> None:
    try:
        redis_client.shared(ratelimit.TIMEOUT_S).delete(_bound_key(hook_id, signature))
    except redis.RedisError:  # then it expires with its tolerance
        logger.warning("hook.signature_unbind_failed", extra={"hook_id": hook_id})


def _bound_key(hook_id: str, signature: str) -> str:
    return f"aob:hook:{hook_id}:signature-delivery:{signature}"


def _refused_before(hook_id: str, signature: str) -> bool:
    try:
        return bool(redis_client.shared(ratelimit.TIMEOUT_S).exists(_refused_key(hook_id, signature)))
    except redis.RedisError:
        return False


def _refusal_record(hook: Hook, delivery_id: str | None, exc: AobError) -> None:
    """Keep what the sender of an authenticated delivery was told, for the hook's owner; then the
    hook's refusals past its latest ``AOB_HOOK_REFUSALS_KEPT`` go, in the same transaction, so a
    sender refused without end holds that many rows. Text as PostgreSQL stores it (no NUL: the
    delivery id is a header the signature does not cover), bounded."""
    kept = settings.AOB_HOOK_REFUSALS_KEPT
    if exc.status in PASSING and not _first_lately(hook.pk, str(exc.code)):
        return
    try:
        with transaction.atomic():
            HookRefusal.objects.create(
                hook=hook, delivery_id=_printable(delivery_id or "")[:MAX_DELIVERY_ID], code=str(exc.code)[:64],
                status=exc.status, message=_printable(exc.message, keep="\n")[:_REFUSAL_MESSAGE_CHARS],
                details=_details(exc.extra))
            stale = HookRefusal.objects.filter(hook=hook).order_by("-received_at", "-id").values_list("pk", flat=True)[kept:]
            HookRefusal.objects.filter(pk__in=list(stale)).delete()
    except DatabaseError:  # the refusal itself is what the sender must get; the hook may be gone meanwhile
        logger.warning("hook.refusal_record_failed", extra={"hook_id": hook.pk}, exc_info=True)


def _printable(text: str, keep: str = "") -> str:
    return "".join(c if c.isprintable() or c in keep else "\ufffd" for c in text)


def _details(extra: dict[str, Any]) -> dict[str, Any]:
    """The refusal's details as stored JSON holds them (``strict_json``: no NUL, no lone surrogate),
    or a note of their size past ``_REFUSAL_DETAILS_BYTES``."""
    try:
        clean = strict_json(extra, non_finite="null")
    except AobError:
        return {"unreadable": True}
    size = size_of(canonical_json(clean))
    return clean if size <= _REFUSAL_DETAILS_BYTES else {"truncated": True, "bytes": size}


# Refusals that pass (``PASSING``: the owner's rate limit, Redis away) are recorded once a minute a
# hook: a sender that holds the secret and keeps sending past the limit would otherwise cost a write
# per request.
PASSING_RECORDED_EVERY_S = 60


def _first_lately(hook_id: str, code: str) -> bool:
    """Whether no refusal of this kind was recorded for the hook in the last minute (none is, with
    Redis away: recording needs it to stay bounded)."""
    try:
        return bool(redis_client.shared(ratelimit.TIMEOUT_S).set(
            f"aob:hook:{hook_id}:refused:{code}", 1, nx=True, ex=PASSING_RECORDED_EVERY_S))
    except redis.RedisError:
        return False


def _delivered(hook: Hook, delivery_id: str, signature: str) -> Accepted | None:
    """The answer to a delivery whose id or signature the hook has had before: the first one's run."""
    first = (HookDelivery.objects.filter(hook=hook).filter(Q(delivery_id=delivery_id) | Q(signature=signature))
             .select_related("run").order_by("received_at", "pk").first())
    if first is None:
        return None
    logger.info("hook.duplicate_delivery", extra={"hook_id": hook.pk})
    return Accepted(run=first.run, duplicate=True)


def _fresh(timestamp: str | None) -> bool:
    """Unix seconds in ASCII digits, within the tolerance of now. Read by ``bounded_decimal``: ``int``
    took 400 digits and the float subtraction raised (an anonymous 500)."""
    sent = bounded_decimal(timestamp or "", 12)
    return sent is not None and abs(time.time() - sent) <= settings.AOB_HOOK_TOLERANCE_S


def _inputs(hook: Hook, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    try:  # the API's own parser: NUL characters, NaN, deep nesting and huge integers are refused alike
        payload = loads_strict(body) if body.strip() else {}
    except BodyRejected as exc:
        raise ValidationFailed(f"the body is not accepted: {exc.detail}", code=exc.rule,
                               extra={"field": "body", "rule": exc.rule}) from None
    try:  # the rule every save applies, applied to what is stored too: a mapping saved before it held
        mapping = mapping_check(hook.mapping)
    except ValidationFailed as exc:
        raise ValidationFailed(f"the hook's stored mapping is refused ({exc.message}): its owner must correct it",
                               code="mapping_invalid", extra={"field": "mapping", "rule": exc.extra.get("rule")}
                               ) from None
    if not mapping:
        inputs = payload
    elif "cel" in mapping:
        try:
            inputs = evaluate(mapping["cel"], {"body": payload, "headers": headers},
                              timeout_ms=settings.AOB_HOOK_MAPPING_TIMEOUT_MS, setting="AOB_HOOK_MAPPING_TIMEOUT_MS")
        except ExpressionError as exc:  # named, never quoted: CEL's text quotes what it read of the body
            raise ValidationFailed(f"the hook's mapping failed: {_mapping_failure(exc)}; the body's values are "
                                   "not quoted", code="mapping_failed",
                                   extra={"field": "mapping.cel", "rule": exc.named("cel")}) from None
        inputs = json.loads(json.dumps(inputs, default=str))  # CEL maps and lists as plain JSON
        # the rule run_start applies to every run's inputs, here to say that the mapping made them
        problem = unstorable(inputs)
        if problem is not None:
            raise ValidationFailed(f"the hook's mapping failed: it made inputs at {problem.path} that cannot be "
                                   f"stored: {problem.message}", code="mapping_failed",
                                   extra={"field": "mapping.cel", "rule": problem.rule, "path": problem.path})
    else:
        try:
            # a body's fields are optional: one it does not have maps to null (a node reading it decides)
            inputs = resolve(mapping["template"], inputs=_template_inputs(payload), outputs={}, strict=False)
        except ConfigTooLarge as exc:  # the bound of every resolution, here the mapping's, not a node's
            limit = exc.extra.get("limit")
            raise ValidationFailed(f"the hook's mapping failed: the inputs its template makes passed {limit} bytes "
                                   "(AOB_MAX_RESOLVED_CONFIG_BYTES): copy less of the body, or fewer times",
                                   code="mapping_failed",
                                   extra={"field": "mapping.template", "rule": "max_bytes", "limit": limit}) from None
    if not isinstance(inputs, dict):
        made_by = ("mapping.cel" if "cel" in mapping else "mapping.template") if mapping else "inputs"
        raise ValidationFailed("a run's inputs are a JSON object: send one, or map the body to one"
                               + (f" ({made_by} made a {type(inputs).__name__})" if mapping else "")
                               + (f"; {TEMPLATE_READS}" if made_by == "mapping.template" else ""),
                               code="invalid_inputs", extra={"field": made_by, "rule": "type"})
    return inputs


def _mapping_failure(exc: ExpressionError) -> str:
    """What kind of failure a CEL mapping met, in words of its rule and the error's type alone: the
    error's own text quotes the body (a missing key, a value ``duration()`` or ``matches()`` refused,
    a pattern), and a refusal is listed to the hook's owner, "never the body" (``HookRefusal``)."""
    if exc.rule == "timeout":
        return (f"evaluation stopped at its time limit ({settings.AOB_HOOK_MAPPING_TIMEOUT_MS} ms, "
                "AOB_HOOK_MAPPING_TIMEOUT_MS; at most AOB_CEL_TIMEOUT_MS)")
    if exc.rule == "regex":
        return "a pattern given to matches() is not one RE2 accepts"
    if exc.rule == "evaluation":
        cause = exc.__cause__
        kind = type(cause).__name__ if isinstance(cause, Exception) else "an error"
        return f"evaluating it over this body raised {kind} (a missing key or field, a value of another type)"
    return f"it broke the rule {exc.named('cel')}"


def _template_inputs(payload: Any) -> dict[str, Any]:
    """What a template mapping's ``$inputs`` reads (``TEMPLATE_READS``): an object body itself, as
    a run's ``$inputs`` is its inputs (every hook written so far reads ``$inputs.<field>``); any
    other body (a list, text, a number) under ``body``, since ``$inputs`` names an object."""
    return payload if isinstance(payload, dict) else {"body": payload}


def _version(hook: Hook) -> WorkflowVersion:
    """The hook's tag's current version, held for the run (``workflow_version_for_start``). A tag
    deleted meanwhile took its hooks with it: the delivery is an unknown hook's 401."""
    try:
        return workflow_version_for_start(workflow=hook.workflow)
    except NotFound:
        logger.info("hook.refused", extra={"hook_id": hook.pk})  # never why
        raise HookUnauthorized("the request could not be authenticated") from None


def _start(hook: Hook, version: WorkflowVersion, inputs: dict[str, Any], delivery_id: str) -> Run:
    from workflows.services.runs import run_start

    return run_start(owner=hook.owner, artifact_id=version.artifact_id, inputs=inputs, workflow=hook.workflow,
                     request_id=f"hook-{delivery_id}"[:64])
