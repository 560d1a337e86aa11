"""A careless user's mistakes end in one line saying what is wrong (exit 1), never a Python
traceback: each of these ended in one (a helper's, reading as a careless user). No server is needed:
each is refused before a request; the API URL points at a closed port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLOSED = "http://127.0.0.1:9"  # nothing listens


def aob(tmp_path: Path, *args: str, input: bytes | None = None, api_url: str = CLOSED) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOB_")}
    env.update({"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")})
    return subprocess.run([sys.executable, "-m", "aob.cli.main", "--api-url", api_url, *args], cwd=ROOT, env=env,
                          input=input, capture_output=True, timeout=60)


def no_traceback(done: subprocess.CompletedProcess) -> None:
    err = done.stderr.decode(errors="replace")
    assert "Traceback" not in err, err[-1500:]
    assert done.returncode == 1 and err.strip().splitlines()[-1].lower().startswith("error"), err


def test_workflow_file_not_utf8(tmp_path: Path) -> None:
    """A definition saved as UTF-16 (Windows editors) or a binary file by mistake."""
    bad = tmp_path / "wf.json"
    bad.write_bytes('{"nodes": []}'.encode("utf-16"))
    no_traceback(aob(tmp_path, "workflow", "validate", str(bad)))


def test_inputs_with_nan(tmp_path: Path) -> None:
    """Python's json.loads takes NaN/Infinity; httpx refuses to send them (ValueError)."""
    no_traceback(aob(tmp_path, "run", "start", "greet", "--inputs", '{"x": NaN}'))


def test_inputs_with_a_key_given_twice_are_refused_before_sending(tmp_path: Path) -> None:
    """Python's json.loads keeps the last of a key given twice: the run would have started with
    ``{}``, the amount written first dropped before the request; the API refuses it alike."""
    done = aob(tmp_path, "run", "start", "greet", "--inputs", '{"inputs": {"amount": 1}, "inputs": {}}')
    no_traceback(done)
    assert "'inputs' is given more than once in an object (at /inputs)" in done.stderr.decode(), done.stderr


def test_a_mistyped_workflow_file_is_named_missing_not_sent_as_a_tag(tmp_path: Path) -> None:
    """`aob run start examples/gret.json` (greet.json mistyped) was sent as a tag, and the answer was
    the tag's rule; a target with a path separator or ending in .json is a file, read as one."""
    for target in ("examples/gret.json", "gret.json", "examples/"):
        done = aob(tmp_path, "run", "start", target, "--inputs", '{"name": "Ada"}')
        no_traceback(done)
        assert f"cannot read workflow file {target}: " in done.stderr.decode(), done.stderr


def test_api_url_with_bad_port(tmp_path: Path) -> None:
    no_traceback(aob(tmp_path, "whoami", api_url="http://localhost:80a"))


def test_api_url_unclosed_ipv6_with_token(tmp_path: Path) -> None:
    env_token = ("--token", "x")
    done = aob(tmp_path, *env_token, "whoami", api_url="http://[::1")
    no_traceback(done)


def test_secret_from_non_utf8_pipe(tmp_path: Path) -> None:
    no_traceback(aob(tmp_path, "secret", "set", "X", "--value", "-", input=b"\xff\xfe"))


def test_config_file_with_wrong_shape(tmp_path: Path) -> None:
    """A hand-edited config.json whose "servers" is not an object."""
    cfg = tmp_path / "config" / "aob"
    cfg.mkdir(parents=True)
    (cfg / "config.json").write_text('{"servers": []}')
    no_traceback(aob(tmp_path, "whoami"))


def test_workflow_file_deeply_nested(tmp_path: Path) -> None:
    """json.loads raises RecursionError (not ValueError) for a deeply nested document."""
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200000 + "]" * 200000)
    no_traceback(aob(tmp_path, "workflow", "validate", str(deep)))


def test_inputs_with_a_number_past_a_double(tmp_path: Path) -> None:
    """1e400 parses to Infinity by another name, and httpx refused it as NaN."""
    no_traceback(aob(tmp_path, "run", "start", "greet", "--inputs", '{"x": 1e400}'))


def test_approve_data_with_nan(tmp_path: Path) -> None:
    no_traceback(aob(tmp_path, "approve", "00000000-0000-0000-0000-000000000000", "n", "--data", '{"x": NaN}'))


def test_a_token_with_a_newline_is_taken_without_it_and_a_token_beyond_ascii_is_refused_unshown(tmp_path: Path) -> None:
    """A token mounted from a file ends in a newline: httpx refused the header and its message, shown
    as "cannot reach the API", quoted the whole token (into a CI log); beyond ASCII it raised."""
    secret = "9f3c1e7a5b2d4c6e8f0a1b3c5d7e9f1a2b4c6d8e"
    with_newline = aob(tmp_path, "--token", secret + "\n", "whoami")
    no_traceback(with_newline)
    assert "cannot reach the API" in with_newline.stderr.decode() and secret not in with_newline.stderr.decode()
    for token in ("tök" + secret, "a b"):
        refused = aob(tmp_path, "--token", token, "whoami")
        no_traceback(refused)
        err = refused.stderr.decode()
        assert "copy it again" in err and token not in err, err


def test_a_cost_ceiling_that_is_no_finite_number_is_refused(tmp_path: Path) -> None:
    for value in ("nan", "inf", "1e400"):
        done = aob(tmp_path, "run", "budget", "00000000-0000-0000-0000-000000000000", "--max-cost-usd", value)
        assert done.returncode == 2 and "not a finite number" in done.stderr.decode(), done.stderr.decode()


def test_an_idempotency_key_the_server_would_refuse_or_an_empty_one_is_refused_before_sending(tmp_path: Path) -> None:
    """Beyond ASCII it raised from httpx; empty (an unset variable) it became a new random key, and a
    script's retry started a second run."""
    for key in ("ké‮", "", "x" * 256):
        done = aob(tmp_path, "run", "start", "greet", "--idempotency-key", key)
        assert done.returncode == 2 and "printable ASCII" in done.stderr.decode(), done.stderr.decode()


def test_empty_inputs_are_an_error_not_none(tmp_path: Path) -> None:
    """``--inputs "$INPUTS"`` with the variable unset started a run with no inputs."""
    no_traceback(aob(tmp_path, "run", "start", "greet", "--inputs", ""))


def test_an_api_url_idna_cannot_write_is_named(tmp_path: Path) -> None:
    for url in (f"https://{'a' * 64}.com", "https://xn--.com"):
        done = aob(tmp_path, "whoami", api_url=url)
        no_traceback(done)
        assert "cannot be read" in done.stderr.decode() or "cannot be written" in done.stderr.decode()


def test_a_secret_s_name_the_server_refuses_is_named_before_its_value_is_asked(tmp_path: Path) -> None:
    done = aob(tmp_path, "secret", "set", "crm-token", input=b"")
    err = done.stderr.decode()
    assert done.returncode == 2 and "letters, digits and _" in err and "Value" not in done.stdout.decode(), err


def test_a_server_that_is_not_aob_s_is_named_not_a_traceback(tmp_path: Path) -> None:
    """Another service on the port answering 200 with JSON of its own (``{}``, ``[]``): the commands
    that read the answer raised ``KeyError``/``TypeError``."""
    import http.server
    import threading

    class Other(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"[]" if "runs" in self.path else b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Other)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        for command in (("--token", "t", "whoami"), ("--token", "t", "run", "list"), ("--token", "t", "workflow", "list")):
            done = aob(tmp_path, *command, api_url=url)
            no_traceback(done)
            assert "did not answer as the AOB API does" in done.stderr.decode(), done.stderr.decode()
    finally:
        server.shutdown()


def test_an_answer_whose_encoding_cannot_be_decoded_is_an_error_naming_the_server(tmp_path: Path) -> None:
    """A proxy answering ``Content-Encoding: gzip`` over a body that is not gzip: httpx raises
    ``DecodingError``, a ``RequestError`` but no ``TransportError``, which was all the client
    caught, so the command ended in a traceback."""
    import http.server
    import threading

    class Broken(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"not gzip at all"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        done = aob(tmp_path, "--token", "t", "whoami", api_url=url)
        no_traceback(done)
        assert f"the answer of the API at {url}" in done.stderr.decode(), done.stderr.decode()
    finally:
        server.shutdown()


def test_a_stored_token_that_is_not_text_is_refused_naming_the_file(tmp_path: Path) -> None:
    """A hand-edited config.json whose token is a number: it was sent on as the token, and
    ``.strip()`` on it raised a traceback."""
    cfg = tmp_path / "config" / "aob"
    cfg.mkdir(parents=True)
    (cfg / "config.json").write_text('{"servers": {"http://127.0.0.1:9": {"token": 5, "username": "a"}}}')
    done = aob(tmp_path, "whoami")
    no_traceback(done)
    assert "config.json" in done.stderr.decode() and "delete the file" in done.stderr.decode(), done.stderr.decode()


def test_an_argument_that_is_not_utf8_in_a_url_path_is_one_error_line(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 (a Latin-1 terminal, a script's bytes) come to Python as lone
    surrogates; quoted into a path segment they ended in a traceback, where the same bytes in
    ``--inputs`` or ``--tag`` end in the request's "cannot be written" line, as these now do."""
    for args in (("workflow", "show", b"caf\xe9"), ("workflow", "versions", b"caf\xe9"), ("run", "status", b"\xff"),
                 ("logs", b"\xff"), ("run", "list", "--tag", b"caf\xe9")):
        done = aob(tmp_path, *(os.fsdecode(a) for a in args))
        no_traceback(done)
        assert "cannot be written" in done.stderr.decode(errors="replace"), done.stderr
