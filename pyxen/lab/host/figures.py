"""The end every benchmark plot shares: the lab's caveat as the title,
then saved and closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: What every plot of the nested lab must say.
WITHIN_RUN = "Nested Xen under TCG: compare variants within this run only"


def save(fig: Any, target: Path, title: str = WITHIN_RUN) -> None:
    import matplotlib.pyplot as plt
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
