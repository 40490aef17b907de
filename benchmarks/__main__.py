"""Run every benchmark in this directory (`make bench`), or the ones named: python -m benchmarks pull unpack"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> None:
    wanted = set(sys.argv[1:])
    here = Path(__file__).parent
    for mod in sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_")):
        if wanted and mod.removeprefix("bench_") not in wanted:
            continue
        print(f"# {mod}", flush=True)
        importlib.import_module(f"benchmarks.{mod}").main([])


if __name__ == "__main__":
    main()
