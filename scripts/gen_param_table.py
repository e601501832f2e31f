#!/usr/bin/env python3
"""Print README's parameter table from vggt4d_ros/ros/params.py; `--write` replaces it in README.md
(between the params:begin/params:end markers). test_package checks that README is up to date."""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vggt4d_ros.ros.params import CAMERA_PARAMS, NODE_PARAMS  # noqa: E402

BEGIN, END = "<!-- params:begin -->", "<!-- params:end -->"


def _row(name, p) -> str:
    rng = f"{p.range[0]:g} .. {p.range[1]:g}" if p.range else ""
    if p.choices:
        rng = " \\| ".join(c if c else '""' for c in p.choices)
    d = p.default
    if isinstance(d, bool):
        d = str(d).lower()
    elif isinstance(d, str):
        d = f'"{d}"'
    elif isinstance(d, (list, tuple)):
        d = "[" + ", ".join(str(x) for x in d) + "]"
    desc = p.description.replace("|", "\\|")
    return f"| `{name}` | {p.kind} | `{d}` | {p.unit} | {rng} | {'' if p.static else 'yes'} | {desc} |"


def table() -> str:
    rows = ["| parameter | type | default | unit | range / choices | live | description |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    rows += [_row(p.name, p) for p in NODE_PARAMS]
    rows += [_row("<camera>." + p.name, p) for p in CAMERA_PARAMS]
    return "\n".join(rows)


def main() -> int:
    text = table()
    if "--write" in sys.argv:
        readme = ROOT / "README.md"
        s = readme.read_text()
        new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), BEGIN + "\n" + text + "\n" + END, s, flags=re.S)
        readme.write_text(new)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
