"""Print the agreement figure of the hand-written cases and each difference.

Usage: ``python -m tests.differential.report [-v]`` (fetches the oracle like the tests do).
"""

from __future__ import annotations

import sys

from tests.differential.cases import load_allowlist, load_cases
from tests.differential.oracle import Opa, fetch_oracle, ours


def main(argv: list[str]) -> int:
    package_dir = fetch_oracle()
    assert package_dir is not None
    opa = Opa(package_dir)
    cases = load_cases()
    allowed = load_allowlist()
    differ = 0
    for case in cases:
        expected = opa.evaluate(case.module, case.rule, case.input)
        got = ours(case.ours_module, case.rule, case.input, syntax=case.ours_syntax)
        if expected.same_as(got):
            continue
        differ += 1
        mark = "allowed" if case.id in allowed else "DIFFERS"
        if "-v" in argv or case.id not in allowed:
            source = case.module.removeprefix("package t\n\n").strip().replace("\n", " ; ")
            print(f"{mark} {case.id}: {source[:120]}")
            print(f"    OPA:  {expected.show()[:160]}")
            print(f"    ours: {got.show()[:160]}")
    print(f"agreement: {len(cases) - differ}/{len(cases)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
