"""Print the agreement figure of the hand-written cases and each difference with its direction.

Usage: ``python -m tests.differential.report [-v]`` (fetches the oracle like the tests do).
"""

from __future__ import annotations

import sys

from tests.differential.cases import load_allowlist, load_cases, load_directions
from tests.differential.oracle import Opa, fetch_oracle, ours


def main(argv: list[str]) -> int:
    package_dir = fetch_oracle()
    assert package_dir is not None
    opa = Opa(package_dir)
    cases = load_cases()
    allowed = load_allowlist()
    directions = load_directions()
    differ = 0
    still_open = 0
    for case in cases:
        expected = opa.evaluate(case.module, case.rule, case.input)
        got = ours(case.ours_module, case.rule, case.input, syntax=case.ours_syntax)
        if expected.same_as(got):
            continue
        differ += 1
        direction = directions.get(case.id)
        still_open += direction == "both"
        mark = {"denies": "denies", "both": "OPEN"}.get(direction or "", "DIFFERS")
        if "-v" in argv or case.id not in allowed:
            source = case.module.removeprefix("package t\n\n").strip().replace("\n", " ; ")
            print(f"{mark} {case.id}: {source[:120]}")
            print(f"    OPA:  {expected.show()[:160]}")
            print(f"    ours: {got.show()[:160]}")
    print(f"agreement: {len(cases) - differ}/{len(cases)} cases")
    print(f"differences: {differ - still_open} deny only, {still_open} open (both ways)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
