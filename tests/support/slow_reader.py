"""A loopback remote that reads what it is sent a burst at a time (the outside world, never our code):
each burst comes a little sooner than any one write's timeout, the whole body far later."""

from __future__ import annotations

import socket
import threading
import time


def burst_reader(*, burst: int, every: float, lifetime: float = 15) -> tuple[int, list[float]]:
    """A server on loopback that reads up to ``burst`` bytes, then nothing for ``every`` seconds,
    again, for ``lifetime`` seconds at most; answers nothing. Its port, and when each burst ended."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the body waits in the sender
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    bursts: list[float] = []
    started = time.monotonic()

    def serve() -> None:
        try:
            srv.settimeout(lifetime)
            conn, _ = srv.accept()
        except OSError:
            srv.close()
            return
        try:
            conn.settimeout(0.05)
            while time.monotonic() - started < lifetime:
                taken = 0
                while taken < burst:
                    try:
                        data = conn.recv(65536)
                    except TimeoutError:
                        break
                    if not data:
                        return  # the client gave up
                    taken += len(data)
                bursts.append(time.monotonic() - started)
                time.sleep(every)
        except OSError:
            pass
        finally:
            conn.close()
            srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], bursts
