"""What masking an executor's output costs is bounded by that output, not by the owner's secrets.

An http node that sent an owner's 200 secrets (the count cap), each 24 characters some of which URL
encoders escape, had every string of its answer searched for each of their 4,761 forms, one
``in`` and one ``replace`` each: a 1.1 MiB JSON answer took 10 s of the worker's CPU. The forms were
made again at every mask, and the log filter masks each field of every record logged while the
secrets are in use: 64 KiB of such a secret took 0.7 s to put in its forms, each time."""

from __future__ import annotations

import pytest

import vault.references as references
from vault.references import SecretBox

SPECIAL = "ab/ ~!$é"  # characters each encoder writes its own way: many forms per secret


class Counted(str):
    """A string that counts the substring searches made in it."""

    searches = 0

    def __contains__(self, other: object) -> bool:
        Counted.searches += 1
        return super().__contains__(other)  # type: ignore[operator]

    def replace(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        Counted.searches += 1
        return super().replace(*args, **kwargs)


def _box(values: dict[str, str]) -> SecretBox:
    box = SecretBox(1, loader=lambda owner, names: {name: values[name] for name in names})
    box.render(" ".join(f"${{secrets.{name}}}" for name in values), "", lambda text: text)
    return box


def test_a_string_is_searched_once_whatever_the_number_of_secrets_in_use():
    values = {f"S{i}": f"{i:03d}" + "".join(SPECIAL[(i * 7 + j) % len(SPECIAL)] for j in range(21)) for i in range(200)}
    box = _box(values)
    strings = [Counted(f"item {i}: nothing secret here") for i in range(50)]
    Counted.searches = 0

    masked = box.mask({"items": strings, "echo": f"token={values['S7']}"})

    assert masked["items"] == [str(s) for s in strings]
    assert masked["echo"] == "token=[secret:S7]"
    assert Counted.searches <= len(strings)  # was about 4,761 per string: one per form of every secret


def test_the_forms_of_the_secrets_in_use_are_made_once_however_often_they_are_masked(monkeypatch):
    made: list[str] = []
    url_forms = references._url_forms
    monkeypatch.setattr(references, "_url_forms", lambda secret: made.append(secret) or url_forms(secret))
    box = _box({"A": "tok/en+1==", "B": "p a ss~word", "C": "plain-token-123"})

    for _ in range(5):  # an output, an error, and each field of every record logged meanwhile
        box.mask({"body": "tok%2Fen%2B1%3D%3D", "note": "p+a+ss%7Eword"})
    carried = box.carried(["Bearer plain-token-123"])

    assert carried == ["C"]
    assert sorted(made) == sorted(["tok/en+1==", "p a ss~word", "plain-token-123"])  # once each, not 6 times


def test_overlapping_and_nested_secrets_leave_no_part_of_either_in_the_text():
    box = _box({"LONG": "abcd-1234-wxyz", "SHORT": "1234", "TAIL": "wxyz!!"})

    assert box.mask("x abcd-1234-wxyz y") == "x [secret:LONG] y"
    assert box.mask("1234 and abcd-1234") == "[secret:SHORT] and abcd-[secret:SHORT]"
    masked = box.mask("abcd-1234-wxyz!!")  # LONG and TAIL overlap: neither may be read in what is kept
    assert "abcd-1234" not in masked and "wxyz!!" not in masked and "1234-wxyz" not in masked
    assert box.mask({"k abcd-1234-wxyz": 1234}) == {"k [secret:LONG]": "[secret:SHORT]"}


@pytest.mark.django_db
def test_an_owners_secrets_are_capped_in_total_size(api, user, make_user, settings):
    """The count cap alone let an owner keep 200 secrets of 64 Ki characters each (13 MB): the forms
    a node masks for them, at worst 48 characters for each byte, did not fit a worker's memory."""
    from tests.conftest import client_for

    settings.AOB_MAX_SECRETS_BYTES_PER_OWNER = 40
    assert api.put("/api/v1/secrets/A_KEY", {"value": "a" * 16}, format="json").status_code == 201
    assert api.put("/api/v1/secrets/B_KEY", {"value": "é" * 8}, format="json").status_code == 201  # 16 bytes
    refused = api.put("/api/v1/secrets/C_KEY", {"value": "c" * 16}, format="json")
    assert refused.status_code == 400
    body = refused.json()
    assert "AOB_MAX_SECRETS_BYTES_PER_OWNER" in body["message"]
    assert body["details"] == {"field": "value", "rule": "max_secrets_bytes", "limit": 40, "size": 48}
    # a new value counts instead of the one it replaces
    assert api.put("/api/v1/secrets/A_KEY", {"value": "a" * 24}, format="json").status_code == 200
    assert api.put("/api/v1/secrets/A_KEY", {"value": "a" * 25}, format="json").status_code == 400
    assert client_for(make_user("bob")).put("/api/v1/secrets/C_KEY", {"value": "c" * 16},
                                            format="json").status_code == 201  # each owner's own
    api.delete("/api/v1/secrets/B_KEY")
    assert api.put("/api/v1/secrets/C_KEY", {"value": "c" * 16}, format="json").status_code == 201


@pytest.mark.django_db
def test_the_secrets_stored_before_are_measured_by_the_migration(user):
    import importlib

    from cryptography.fernet import Fernet
    from django.apps import apps

    from vault import crypto
    from vault.models import Secret

    sizes = importlib.import_module("vault.migrations.0002_secret_value_bytes").sizes
    Secret.objects.create(owner=user, name="READABLE", ciphertext=crypto.encrypt("é" * 10))
    lost = Fernet(Fernet.generate_key()).encrypt(b"x" * 20).decode()  # under a key no longer configured
    Secret.objects.create(owner=user, name="LOST", ciphertext=lost)

    sizes(apps, None)

    measured = dict(Secret.objects.values_list("name", "value_bytes"))
    assert measured["READABLE"] == 20
    assert 20 <= measured["LOST"] <= 31  # the most its ciphertext can hold
