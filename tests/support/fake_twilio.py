"""A Twilio-compatible HTTP API on loopback, enough for the real twilio library.

    POST /2010-04-01/Accounts/{sid}/Messages.json   (To, From, Body) -> 201 message resource

It checks HTTP Basic auth, answers Twilio's JSON error bodies (e.g. 400 with code 21211
for numbers listed in ``invalid_numbers``), and can fail the next requests with chosen
statuses (429, 503) to act out a provider outage, now or after a number of requests.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

MESSAGES_RE = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/(?P<kind>Messages|Calls)\.json$")


@dataclass
class FakeTwilio:
    account_sid: str = "AC00000000000000000000000000000001"
    auth_token: str = "test-token"
    invalid_numbers: set[str] = field(default_factory=set)
    fail_next: list[int] = field(default_factory=list)
    # An outage to come: once ``requests`` reaches ``outage_at``, ``outage`` joins fail_next.
    outage_at: int = 0
    outage: list[int] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)
    calls: list[dict[str, str]] = field(default_factory=list)
    requests: int = 0
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as Twilio's API does: a client reuses its connections. A reply's
            # headers and body are two writes: without TCP_NODELAY the body would wait
            # for the client's delayed ACK of the headers.
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                return None

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, code: int, message: str) -> None:
                self._reply(
                    status,
                    {
                        "code": code,
                        "message": message,
                        "more_info": f"https://www.twilio.com/docs/errors/{code}",
                        "status": status,
                    },
                )

            def _call(self, form: dict[str, str]) -> None:
                to, twiml = form.get("To", ""), form.get("Twiml", "")
                if not to or not (twiml or form.get("Url")):
                    return self._error(
                        400, 21205, "A 'To' number and 'Twiml' or 'Url' are required."
                    )
                if to in fake.invalid_numbers:
                    return self._error(
                        400, 21211, f"The 'To' number {to} is not a valid phone number."
                    )
                with fake.lock:
                    sid = f"CA{next(fake._ids):032x}"
                    fake.calls.append(
                        {"sid": sid, "to": to, "from": form.get("From", ""), "twiml": twiml}
                    )
                self._reply(
                    201, {"sid": sid, "account_sid": fake.account_sid, "to": to, "status": "queued"}
                )

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                with fake.lock:
                    fake.requests += 1
                    if fake.outage and fake.requests > fake.outage_at:
                        fake.fail_next.extend(fake.outage)
                        fake.outage = []
                    failure = fake.fail_next.pop(0) if fake.fail_next else None
                match = MESSAGES_RE.match(self.path)
                if match is None:
                    return self._error(
                        404, 20404, f"The requested resource {self.path} was not found"
                    )
                expected = base64.b64encode(
                    f"{fake.account_sid}:{fake.auth_token}".encode()
                ).decode()
                if (
                    self.headers.get("Authorization") != f"Basic {expected}"
                    or match["sid"] != fake.account_sid
                ):
                    return self._error(401, 20003, "Authenticate")
                if failure == 429:
                    return self._error(429, 20429, "Too Many Requests")
                if failure is not None:
                    return self._error(failure, 20500, "Internal Server Error")
                if match["kind"] == "Calls":
                    return self._call(form)
                to, body = form.get("To", ""), form.get("Body", "")
                if not to or not body:
                    return self._error(400, 21604, "A 'To' phone number and a 'Body' are required.")
                if to in fake.invalid_numbers:
                    return self._error(
                        400, 21211, f"The 'To' number {to} is not a valid phone number."
                    )
                with fake.lock:
                    sid = f"SM{next(fake._ids):032x}"
                    record = {
                        "sid": sid,
                        "to": to,
                        "from": form.get("From", ""),
                        "body": body,
                        "status_callback": form.get("StatusCallback", ""),
                        "at": f"{time.monotonic():.6f}",  # when it was accepted
                    }
                    fake.messages.append(record)
                self._reply(
                    201,
                    {
                        "sid": sid,
                        "account_sid": fake.account_sid,
                        "to": to,
                        "from": record["from"],
                        "body": body,
                        "status": "queued",
                        "direction": "outbound-api",
                        "num_segments": "1",
                        "uri": f"/2010-04-01/Accounts/{fake.account_sid}/Messages/{sid}.json",
                    },
                )

        ThreadingHTTPServer.request_queue_size = 256
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def to(self, number: str) -> list[dict[str, str]]:
        with self.lock:
            return [m for m in self.messages if m["to"] == number]

    def calls_to(self, number: str) -> list[dict[str, str]]:
        with self.lock:
            return [c for c in self.calls if c["to"] == number]


def main() -> None:
    """Run as a process (benchmarks): ``--port P --out counts.json``; counts on SIGTERM."""
    import argparse
    import signal
    from collections import Counter
    from pathlib import Path

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    fake = FakeTwilio(port=args.port)
    fake.start()
    Path(str(args.out) + ".ready").write_text("ready")
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    fake.stop()
    counts = Counter(m["to"] for m in fake.messages)
    args.out.write_text(json.dumps({"messages": len(fake.messages), "by_recipient": counts}))


if __name__ == "__main__":
    main()
