"""A loopback SMTP server standing in for the mail server (the outside world): the workers' email
backend is Django's SMTP backend pointed here, and every message it accepts is kept, parsed. A
recipient whose address holds "refused" is refused (550), quoting the address, as servers do."""

from __future__ import annotations

import email
import socketserver
import threading
from email.message import Message
from typing import Any


class SmtpServer:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")

            def handle(self) -> None:
                self.reply("220 localhost test SMTP")
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    verb = line.decode(errors="replace").strip().split(" ", 1)[0].upper()
                    if verb == "EHLO":
                        self.reply("250-localhost")
                        self.reply("250 8BITMIME")
                    elif verb == "RCPT" and b"refused" in line.lower():  # a mailbox the server refuses
                        address = line.decode(errors="replace").split(":", 1)[1].strip()
                        self.reply(f"550 5.1.1 {address}: Recipient address rejected: user unknown")
                    elif verb in ("HELO", "MAIL", "RCPT", "RSET", "NOOP"):
                        self.reply("250 OK")
                    elif verb == "DATA":
                        self.reply("354 end with <CRLF>.<CRLF>")
                        data = []
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                            data.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                        owner.accepted(email.message_from_bytes(b"".join(data)))
                        self.reply("250 queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("502 not implemented")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self, message: Message) -> None:
        """A whole message taken, before the server's final reply (a subclass may hold that)."""
        with self.lock:
            self.messages.append(message)

    def sent_to(self, address: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages if address in (m.get("To") or "")]

    @staticmethod
    def body(message: Message) -> str:
        part: Any = message
        if message.is_multipart():
            part = next(p for p in message.walk() if p.get_content_type() == "text/plain")
        return part.get_payload(decode=True).decode()

    def close(self) -> None:
        self.server.shutdown()
