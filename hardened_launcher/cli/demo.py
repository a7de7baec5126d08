"""CLI command: ``hardened-launcher demo`` — the whole product end to end on one machine.

With nothing configured: a control plane (HTTPS long polling; mosquitto with --protocol mqtt),
SeaweedFS S3 and a launcher in a temporary directory
(:class:`hardened_launcher.demo.Environment`), then the four stories as they happen,
a summary table and where to look. Rich output when ``rich`` is installed, plain text otherwise.
Everything it started is stopped on exit and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hardened_launcher.demo.stories import StoryResult
from hardened_launcher.errors import EXIT_INFRASTRUCTURE, ConfigurationError
from hardened_launcher.terminal import for_terminal


class _Plain:
    def say(self, text: str) -> None:
        print(f"  {for_terminal(text)}", flush=True)

    def title(self, text: str) -> None:
        print(f"\n=== {text}", flush=True)

    def summary(self, results: list[StoryResult]) -> None:
        print("\nstory                  result  run                       state     reason")
        for r in results:
            mark = "ok" if r.passed else "FAILED"
            line = f"{r.name:<22} {mark:<7} {r.run_id:<25} {r.state:<9} {r.reason}"
            print(for_terminal(line), flush=True)
            if not r.passed:
                print(f"    {for_terminal(r.problem)}")

    def where(self, rows: list[tuple[str, str]]) -> None:
        print("\nwhere to look:")
        for key, value in rows:
            print(f"  {key:<22} {value}")


class _Rich(_Plain):
    def __init__(self) -> None:
        from rich.console import Console  # noqa: PLC0415 - optional dependency

        self.console = Console(highlight=False)

    def say(self, text: str) -> None:
        from rich.markup import escape  # noqa: PLC0415

        self.console.print(f"  [dim]│[/dim] {escape(for_terminal(text))}")

    def title(self, text: str) -> None:
        from rich.markup import escape  # noqa: PLC0415

        self.console.rule(f"[bold]{escape(text)}")

    def summary(self, results: list[StoryResult]) -> None:
        from rich.markup import escape  # noqa: PLC0415
        from rich.table import Table  # noqa: PLC0415

        table = Table(title="hardened-launcher demo")
        for column in ("story", "result", "run", "state", "reason", "seconds", "evidence"):
            table.add_column(column)
        for r in results:
            table.add_row(
                r.name,
                "[green]ok[/green]" if r.passed else "[red]FAILED[/red]",
                r.run_id,
                r.state,
                escape(for_terminal(r.reason)),
                f"{r.seconds:.1f}",
                escape(for_terminal("; ".join(r.evidence) if r.passed else r.problem[:300])),
            )
        self.console.print(table)

    def where(self, rows: list[tuple[str, str]]) -> None:
        from rich.table import Table  # noqa: PLC0415

        table = Table(title="where to look", show_header=False)
        table.add_column("what")
        table.add_column("where")
        for key, value in rows:
            table.add_row(key, value)
        self.console.print(table)


def _narrator(plain: bool) -> _Plain:
    if not plain and sys.stdout.isatty():
        try:
            return _Rich()
        except ImportError:
            pass
    return _Plain()


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "demo",
        help="the launcher end to end on this machine: control plane, S3, containers",
        description="Starts a control plane (long polling by default; mosquitto with "
        "--protocol mqtt), SeaweedFS and a launcher in a temporary directory and runs four "
        "stories (docs/demo.md). Needs Docker and weed (and mosquitto for mqtt).",
    )
    parser.add_argument("--plain", action="store_true", help="plain text even on a terminal")
    parser.add_argument(
        "--clean",
        action="store_true",
        help="remove the temporary directory at the end (default: keep it to look at)",
    )
    parser.add_argument("--dir", type=Path, default=None, help="use this new directory instead")
    parser.add_argument(
        "--launcher-image",
        metavar="TAG",
        default="",
        help="run the launcher from this container image (scripts/image) instead of this Python",
    )
    parser.add_argument(
        "--protocol",
        choices=("poll", "mqtt"),
        default="poll",
        help="worker transport: HTTPS long polling (default, no broker) or MQTT via mosquitto",
    )
    parser.add_argument(
        "--real-tool",
        action="store_true",
        help="instead of the four stories, a real Ansible playbook planned in check mode, "
        "confirmed and applied (builds a Debian runner image once per Docker host: mmdebstrap)",
    )
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    # Imported here: parsing `demo --help` must not load boto3 and the Docker client.
    from hardened_launcher.demo.environment import (  # noqa: PLC0415
        DemoEnvironmentError,
        Environment,
        MissingComponentsError,
    )
    from hardened_launcher.demo.stories import DEMO_RUN_TIMEOUT, STORIES, run_story  # noqa: PLC0415

    stories = STORIES
    run_timeout = DEMO_RUN_TIMEOUT
    if args.real_tool:
        from hardened_launcher.demo.real_tool import REAL_TOOL_RUN_TIMEOUT, real_tool  # noqa: PLC0415

        stories = (("A real tool: Ansible, planned, confirmed, applied", real_tool),)
        run_timeout = REAL_TOOL_RUN_TIMEOUT
    out = _narrator(args.plain)
    env = Environment(
        root=args.dir,
        keep=not args.clean,
        run_timeout=run_timeout,
        launcher_image=args.launcher_image,
        protocol=args.protocol,
    )
    transport = (
        "HTTPS long polling (mTLS, no broker)" if args.protocol == "poll" else "mosquitto (mTLS)"
    )
    out.title(f"Setting up: control plane, {transport}, SeaweedFS S3, launcher")
    try:
        env.start()
    except MissingComponentsError as exc:
        lines = "; ".join(f"{m.what} is missing: {m.how}" for m in exc.missing)
        raise ConfigurationError(
            f"the demo needs more than this machine has ({lines})",
            hint="Run scripts/demo, which installs what it can, or install the above",
            reason="demo_prerequisites_missing",
        ) from exc
    except DemoEnvironmentError as exc:
        sys.stderr.write(f"error: the demo could not start: {exc}\n")
        return EXIT_INFRASTRUCTURE
    results: list[StoryResult] = []
    try:
        out.say(f"everything lives in {env.path}")
        if env.state is not None and env.protocol == "poll":
            out.say(f"control plane long polls at {env.state.settings.control_plane_url}")
        else:
            out.say(f"broker on 127.0.0.1:{env.state.settings.broker_port if env.state else '-'}")
        out.say(f"object storage at {env.s3.server.endpoint_url if env.s3 else '-'}")
        out.say(f"{len(env.workers)} launcher(s) registered in pool {env.pool}")
        for index, (title, story) in enumerate(stories, 1):
            out.title(f"{index}. {title}")
            result = run_story(story, env, out)
            out.say(
                ("passed: " if result.passed else "FAILED: ") + (result.problem or "as expected")
            )
            results.append(result)
        out.title("Summary")
        out.summary(results)
        rows = list(env.describe().items())
        for launcher in env.workers:
            rows.append(
                (
                    f"verify {launcher.name} audit",
                    (
                        f"HL_STATE_DIR={launcher.state_dir} hardened-launcher audit verify "
                        f"{launcher.audit_dir}"
                    ),
                )
            )
        rows.append(
            (
                "a run's log",
                (
                    f"HL_CP_DIR={env.cp_dir} hardened-launcher controlplane run logs RUN "
                    "(with the HL_CP_S3_* settings of serve; docs/demo.md)"
                ),
            )
        )
        if not env.keep:
            rows.append(("note", "the directory is removed on exit (--clean)"))
        out.where(rows)
    finally:
        env.stop()
    return 0 if results and all(r.passed for r in results) else 1
