"""Benchmark: rendering one template for many recipients, with and without the memo.

    .venv/bin/python bench/render.py [--n 10000] [--rounds 7] [--template crisis-outage]

Renders the template's email variant for N recipients whose variables are built the way
a broadcast builds them, in four audiences: everyone with the same first name, 200 first
names among them, a first name of each recipient's own, and a first name of each one's
own plus an acknowledgement link of each one's own. Each audience is rendered with the
memo of pure templates (clarion/templates/render.py) and with the memo turned off,
alternately, for --rounds rounds; printed: the median CPU time per render of each, and
their ratio.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from activities.deliver import render_variables  # noqa: E402
from clarion.store.repo import ContactSnapshot, CustomerSnapshot  # noqa: E402
from clarion.templates import EmailVariant, load_template_dir, render  # noqa: E402
from clarion.templates.render import _memo  # noqa: E402


def variables(i: int, name: str, ack: bool) -> dict[str, Any]:
    """What a broadcast's template sees for recipient ``i`` (activities/deliver.py)."""
    customer = CustomerSnapshot(
        id=i,
        external_id=f"c{i}",
        name=name,
        locale="en",
        timezone="UTC",
        attributes={"region": "eu-west"},
        contact_points=[ContactSnapshot("email", f"c{i}@example.test")],
    )
    about: dict[str, Any] = {"id": "b1", "generation": 1, "kind": "launch", "escalation": False}
    if ack:
        about["ack_url"] = f"https://clarion.example/ack/token-{i:08d}"
    return render_variables(customer, {"broadcast": about}, f"crisis-b1-g1-c{i}")


def set_memo(variant: EmailVariant, on: bool) -> None:
    for source in (variant.subject, variant.text):
        memo = _memo(source, False)
        if memo is not None:
            memo.outputs.clear()
            memo.hits = 0
            memo.resting = 0 if on else 10**12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--template", default="crisis-outage")
    args = parser.parse_args()
    template = next(
        t for t in load_template_dir(ROOT / "examples" / "templates") if t.name == args.template
    )
    variant = template.locales[template.default_locale].email
    assert variant is not None, f"{args.template} has no email variant"
    rng = random.Random(1)
    audiences = {
        "one first name": [variables(i, f"Alex {i}", False) for i in range(args.n)],
        "200 first names": [
            variables(i, f"Name{rng.randrange(200)} X", False) for i in range(args.n)
        ],
        "each their own": [variables(i, f"Name{i} X", False) for i in range(args.n)],
        "own name and link": [variables(i, f"Name{i} X", True) for i in range(args.n)],
    }
    print(f"template={args.template} n={args.n} rounds={args.rounds}")
    for label, audience in audiences.items():
        spent: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for on in (False, True):
                set_memo(variant, on)
                started = time.process_time()
                for values in audience:
                    render(variant, values)
                spent[on].append((time.process_time() - started) / len(audience) * 1e6)
        off, on = statistics.median(spent[False]), statistics.median(spent[True])
        print(
            f"{label:18s} without memo {off:5.1f} µs, with memo {on:5.1f} µs per render"
            f" ({on / off:.2f})"
        )
    set_memo(variant, True)


if __name__ == "__main__":
    main()
