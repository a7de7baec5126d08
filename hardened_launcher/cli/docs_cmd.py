"""``hardened-launcher docs [TOPIC]``: the documentation this build carries, offline.

Without a topic it prints the project's URLs (from the installed metadata) and the topics: one
per page of ``docs/`` (bundled in the wheel) plus ``settings``, the table of every variable.
A topic is a name from that list, never a path.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from hardened_launcher.buildinfo import docs_dir
from hardened_launcher.errors import EXIT_OK, UsageError
from hardened_launcher.settings import markdown_table

DISTRIBUTION = "hardened-launcher"
SETTINGS_TOPIC = "settings"
MAX_TOPIC_CHARS = 64


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "docs",
        help="print the bundled documentation (topics, a page, or the settings table)",
        description="Offline documentation: without TOPIC, the project URLs and the topics.",
    )
    parser.add_argument("topic", nargs="?", metavar="TOPIC", help="a topic from the list")
    parser.set_defaults(handler=run_docs)


def project_urls() -> list[tuple[str, str]]:
    try:
        entries = metadata.metadata(DISTRIBUTION).get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return []
    urls = []
    for entry in entries:
        label, _, url = str(entry).partition(",")
        urls.append((label.strip(), url.strip()))
    return urls


def pages() -> dict[str, Path]:
    root = docs_dir()
    if root is None:
        return {}
    return {p.stem: p for p in sorted(root.glob("*.md")) if p.is_file()}


def run_docs(args: argparse.Namespace) -> int:
    available = pages()
    topic: str | None = args.topic
    if topic is None:
        for label, url in project_urls():
            sys.stdout.write(f"{label + ':':<15} {url}\n")
        sys.stdout.write("topics (hardened-launcher docs TOPIC):\n")
        sys.stdout.write(f"  {SETTINGS_TOPIC:<14} every SPACELIFT_* and HL_* variable (table)\n")
        for name in available:
            sys.stdout.write(f"  {name}\n")
        if not available:
            sys.stdout.write("  (this installation carries no documentation pages)\n")
        return EXIT_OK
    if topic == SETTINGS_TOPIC:
        sys.stdout.write(markdown_table())
        return EXIT_OK
    page = available.get(topic)
    if page is None:
        shown = "".join(c for c in topic[:MAX_TOPIC_CHARS] if c.isprintable())
        raise UsageError(
            f"no documentation topic {shown!r}",
            hint="run hardened-launcher docs for the list of topics",
        )
    sys.stdout.write(page.read_text(encoding="utf-8"))
    return EXIT_OK
