"""``hardened-launcher policy library [--out DIR] [--force]``: the bundled ready policies.

Without ``--out`` it lists each bundled policy with the first line of its header comment and the
folder it lives in (``policy test`` runs on that folder as it is). With ``--out DIR`` it copies
every policy and its tests into DIR (created 0755 when missing); an existing file is never
replaced unless ``--force`` is given, and nothing is copied when one would be.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hardened_launcher.buildinfo import policy_library_dir
from hardened_launcher.errors import EXIT_OK, ConfigurationError, UsageError

POLICY_SUFFIX = ".rego"
TEST_SUFFIX = "_test.rego"
MAX_SUMMARY_CHARS = 100


@dataclass(frozen=True, kw_only=True)
class LibraryPolicy:
    """One policy file of the library, with its test files."""

    path: Path
    summary: str
    tests: tuple[Path, ...]


def register(commands: argparse._SubParsersAction[Any]) -> None:
    library = commands.add_parser(
        "library",
        help="list the bundled ready policies, or copy them out with --out",
        description="The ready run initialization policies of this build (docs/policy.md).",
    )
    library.add_argument(
        "--out", type=Path, metavar="DIR", help="copy the policies and their tests into DIR"
    )
    library.add_argument(
        "--force", action="store_true", help="replace files that already exist in DIR"
    )
    library.set_defaults(handler=run_library)


def library_root() -> Path:
    root = policy_library_dir()
    if root is None:
        raise ConfigurationError(
            "this installation carries no policy library",
            hint="reinstall hardened-launcher from its wheel or sdist, which bundle policies/",
            reason="policy_library_missing",
        )
    return root


def _summary(path: Path) -> str:
    with path.open(encoding="utf-8", errors="replace") as handle:
        first = handle.readline(MAX_SUMMARY_CHARS * 4)
    text = first.removeprefix("#").strip() if first.startswith("#") else ""
    text = "".join(c for c in text if c.isprintable())
    return text if len(text) <= MAX_SUMMARY_CHARS else text[: MAX_SUMMARY_CHARS - 1] + "…"


def library_policies(root: Path) -> tuple[LibraryPolicy, ...]:
    """The policies of ``root`` (test files belong to the policy whose name they extend)."""
    files = sorted(p for p in root.glob(f"*{POLICY_SUFFIX}") if p.is_file())
    policies = [p for p in files if not p.name.endswith(TEST_SUFFIX)]
    result = []
    for policy in policies:
        stem = policy.name.removesuffix(POLICY_SUFFIX)
        tests = tuple(
            p for p in files if p.name.endswith(TEST_SUFFIX) and p.name.startswith(f"{stem}_")
        )
        result.append(LibraryPolicy(path=policy, summary=_summary(policy), tests=tests))
    return tuple(result)


def _library_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob(f"*{POLICY_SUFFIX}") if p.is_file())


def copy_library(root: Path, out: Path, *, force: bool) -> list[Path]:
    """Copy every policy file of ``root`` into ``out``; all or nothing on existing files."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory", hint="name a directory")
    files = _library_files(root)
    targets = [out / f.name for f in files]
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing and not force:
        raise UsageError(
            f"{len(existing)} file(s) already exist in {out} (first: {existing[0].name})",
            hint="choose an empty directory or pass --force to replace them",
        )
    try:
        out.mkdir(mode=0o755, parents=True, exist_ok=True)
        for source, target in zip(files, targets, strict=True):
            if target.is_symlink():
                # Never write through a link someone placed in the target folder.
                target.unlink()
            temporary = target.with_name(f".{target.name}.tmp")
            temporary.unlink(missing_ok=True)
            shutil.copyfile(source, temporary)
            temporary.chmod(0o644)
            temporary.replace(target)
    except OSError as exc:  # a loop, a file in the way, no permission, a full disk…
        why = exc.strerror or type(exc).__name__
        raise UsageError(
            f"cannot write the policy library into --out {out}: {why}",
            hint="name a directory you can write to (it is created if missing)",
        ) from None
    return targets


def run_library(args: argparse.Namespace) -> int:
    root = library_root()
    if args.out is not None:
        copied = copy_library(root, args.out, force=bool(args.force))
        for path in copied:
            sys.stdout.write(f"{path}\n")
        sys.stdout.write(
            f"copied {len(copied)} files; test them with: "
            f"hardened-launcher policy test {args.out}\n"
        )
        return EXIT_OK
    sys.stdout.write(f"policy library: {root}\n")
    for policy in library_policies(root):
        tests = ", ".join(t.name for t in policy.tests) or "no tests"
        sys.stdout.write(f"  {policy.path.name:<28} {policy.summary}\n")
        sys.stdout.write(f"  {'':<28} tests: {tests}\n")
    sys.stdout.write("copy them out with: hardened-launcher policy library --out DIR\n")
    return EXIT_OK
