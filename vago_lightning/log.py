"""One way to tell the user something, next to Lightning's own console lines."""

from __future__ import annotations

import logging
import os
import warnings

# The decorator Lightning itself uses (the same object), without importing Lightning: the tools
# (prepare above all) would pay seconds of start-up for it. Lightning sets its rank on import, and
# each strategy at setup; until then it is read from the environment, as Lightning does.
from lightning_utilities.core.rank_zero import rank_zero_only

if getattr(rank_zero_only, "rank", None) is None:
    rank_zero_only.rank = next(
        (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK") if k in os.environ), 0
    )

# A child of Lightning's logger, so messages reach the console next to Lightning's own.
log = logging.getLogger("lightning.pytorch.vago")


@rank_zero_only
def say(message: str, warning: bool = True) -> None:
    (log.warning if warning else log.info)(message)


def quiet_known_noise() -> None:
    """Silence what we know to be noise, each at the place it comes from, so that a user reads only
    lines that mean something."""
    # The frozen DVAE and mel extractors stay in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    # The planned dataset splits its batches among workers itself, so its length is exact.
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
    # Lightning 2.6's pytree helper on torch 2.11: a deprecation inside Lightning, not ours to fix.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # A run resumes from its own folder on purpose (`--fresh true` moves an old run aside).
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # coqui's tokenizer warns of a long text at every encode, every epoch, without saying which line:
    # prepare names each such line once instead.
    logging.getLogger("TTS.tts.layers.xtts.tokenizer").addFilter(
        lambda record: "exceeds the character limit" not in str(record.msg)
    )
    # An advertisement for a hosted logger, printed on every run.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(lambda record: not str(record.msg).startswith("💡 Tip"))
