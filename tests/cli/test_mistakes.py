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
