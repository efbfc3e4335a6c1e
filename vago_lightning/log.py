"""One way to tell the user something, next to Lightning's own console lines."""

from __future__ import annotations

import logging

from lightning.pytorch.utilities.rank_zero import rank_zero_only

# A child of Lightning's logger, so messages reach the console next to Lightning's own.
log = logging.getLogger("lightning.pytorch.vago")


@rank_zero_only
def say(message: str, warning: bool = True) -> None:
    (log.warning if warning else log.info)(message)
