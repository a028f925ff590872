"""Copy the tensorrt-stubs package's stubs into a folder mypy can use, fixing what does not parse.

tensorrt-stubs 10.13 installs `tensorrt/__init__.pyi` without `py.typed` (so mypy ignores it where it is
installed) and has signatures that are not valid Python: parameters named `in` (a keyword) and
parameters without a default after ones with a default. This rewrites those two things and nothing
else, so that `make lint` checks every TensorRT call the backend makes against the API's types.

    python scripts/tensorrt_stubs.py OUT_DIR
"""
from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

KEYWORD_PARAMETER = re.compile(r"([(,]\s*)in:")
PARAMETERS = re.compile(r"^(\s*def \w+\()(.*)(\)\s*->.*)$")


def fix_signature(line: str) -> str:
    """`in:` -> `in_:`; a parameter without a default after one with a default gets `= ...`."""
    line = KEYWORD_PARAMETER.sub(r"\1in_:", line)
    match = PARAMETERS.match(line)
    if not match or "=" not in match.group(2):
        return line
    params, seen_default = [], False
    for param in re.split(r",\s*(?![^\[]*\])", match.group(2)):
        if "=" in param:
            seen_default = True
        elif seen_default and param.strip() and not param.strip().startswith("*"):
            param += " = ..."
        params.append(param)
    return match.group(1) + ", ".join(params) + match.group(3)


def main(argv: list[str]) -> int:
    out = Path(argv[1])
    site = Path(sysconfig.get_paths()["purelib"])
    for package in ("tensorrt", "tensorrt_bindings"):
        sources = sorted((site / package).glob("*.pyi"))
        if not sources:
            print(f"tensorrt_stubs: no stubs in {site / package}; pip install --no-deps tensorrt-stubs",
                  file=sys.stderr)
            return 2
        (out / package).mkdir(parents=True, exist_ok=True)
        for source in sources:
            text = "\n".join(fix_signature(line) for line in source.read_text().splitlines())
            (out / package / source.name).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
