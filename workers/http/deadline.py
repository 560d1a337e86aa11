"""One deadline for every socket operation of a request, whichever httpcore runs it: the outbound
client's (httpx's httpcore, ``workers/http/client.py``) and the model client's (the openai SDK's
httpcore2, ``agents/llm.py``). httpx's timeouts are per operation, so a remote dripping its answer
a byte at a time, or its head, held a worker for as long as it liked; each operation here gets at
most the time its request has left, and past it raises the library's own timeout."""

from __future__ import annotations

import contextvars
import time
from types import ModuleType
from typing import Any


class Clamp:
    """The deadline of the request this context runs (``var``, a monotonic time or None), and the
    network stream of ``core`` (httpcore or httpcore2) whose every read, write and TLS handshake it
    clamps (``stream``, for a network backend to wrap the streams it opens)."""

    def __init__(self, core: ModuleType, name: str, passed: str) -> None:
        self.core, self.passed = core, passed
        self.var: contextvars.ContextVar[float | None] = contextvars.ContextVar(name, default=None)
        self.stream = _stream_type(self)

    def time_left(self, timeout: float | None, timeout_exc: type[Exception]) -> float | None:
        deadline = self.var.get()
        if deadline is None:
            return timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise timeout_exc(self.passed)
        return left if timeout is None else min(timeout, left)


def _stream_type(clamp: Clamp) -> type:
    core = clamp.core

    class DeadlineStream(core.NetworkStream):  # type: ignore[name-defined]
        """Clamps every socket operation to the current request's deadline (pooled streams too)."""

        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self._inner.read(max_bytes, clamp.time_left(timeout, core.ReadTimeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            # the inner stream's write gives each send of its loop the whole time again, so a remote
            # reading a body a burst at a time held the request as long as the body lasted: here each
            # send gets the time left (over TLS the socket is an SSLSocket, whose send is all or a timeout)
            sock = self._inner.get_extra_info("socket")
            if getattr(sock, "_sslobj", None) is not self._inner.get_extra_info("ssl_object"):
                # TLS inside TLS (a proxy's, which neither client uses): the socket is not where its bytes go
                self._inner.write(buffer, clamp.time_left(timeout, core.WriteTimeout))
                return
            view = memoryview(buffer)
            try:
                while view:
                    sock.settimeout(clamp.time_left(timeout, core.WriteTimeout))
                    view = view[sock.send(view):]
            except TimeoutError as exc:
                raise core.WriteTimeout(exc) from exc
            except OSError as exc:
                raise core.WriteError(exc) from exc

        def close(self) -> None:
            self._inner.close()

        def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
            return DeadlineStream(self._inner.start_tls(ssl_context, server_hostname,
                                                        clamp.time_left(timeout, core.ConnectTimeout)))

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    return DeadlineStream
