"""How hard the property-based tests push: `make test` runs them briefly, `make fuzz`
sets SFU_FUZZ_SCALE to run each with that many times more examples."""

from __future__ import annotations

import os

SCALE = max(1, int(os.environ.get("SFU_FUZZ_SCALE", "1")))


def examples(count: int) -> int:
    """`count` examples in the ordinary run, `count * SFU_FUZZ_SCALE` under make fuzz."""
    return count * SCALE
