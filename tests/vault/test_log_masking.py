"""While an executor holds secrets, whatever is logged has them masked: message, arguments, extra
fields and the exception's text."""

from __future__ import annotations

import io
import logging

from vault.logs import MaskSecrets
from vault.references import SecretBox

VALUE = "tok/en+1=="


def test_a_record_logged_while_a_secret_is_in_use_is_masked():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskSecrets())
    logger = logging.getLogger("tests.vault.masking")
    logger.addHandler(handler)
    logger.propagate = False
    box = SecretBox(1, loader=lambda owner, names: {n: VALUE for n in names})
    box.render("Bearer ${secrets.T}", "", lambda text: text)
    try:
        with box.active():
            logger.warning("calling %s", f"https://x.example/?k={VALUE}", extra={"header": f"Bearer {VALUE}"})
            try:
                raise ValueError("refused https://x.example/?k=tok%2Fen%2B1%3D%3D")
            except ValueError:
                logger.exception("failed")
        logger.warning("after %s", VALUE)  # outside the block: nothing to mask
    finally:
        logger.removeHandler(handler)

    text = stream.getvalue()
    assert "calling https://x.example/?k=[secret:T]" in text and "[secret:T]" in text.split("failed", 1)[1]
    assert "tok%2Fen%2B1%3D%3D" not in text
    assert text.count(VALUE) == 1 and f"after {VALUE}" in text
