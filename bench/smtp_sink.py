"""An SMTP sink for benchmarks: accepts everything, counts messages per recipient.

    python bench/smtp_sink.py --port 2525 --out counts.json

On SIGTERM it writes {"messages": N, "by_recipient": {address: count}} to --out.
"""

from __future__ import annotations

import argparse
import json
import signal
from collections import Counter
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class Counting:
    def __init__(self) -> None:
        self.by_recipient: Counter[str] = Counter()
        self.messages = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages += 1
        for rcpt in envelope.rcpt_tos:
            self.by_recipient[rcpt] += 1
        return "250 OK"


def main(port: int, out: Path) -> None:
    handler = Counting()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()  # serves from its own thread
    Path(str(out) + ".ready").write_text("ready")
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()
    out.write_text(json.dumps({"messages": handler.messages, "by_recipient": handler.by_recipient}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main(args.port, args.out)
