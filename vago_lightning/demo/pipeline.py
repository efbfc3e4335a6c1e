"""`python -m vago_lightning demo`: the seed workflow in miniature, end to end, on any platform.

tiny base -> demo corpora -> prepare -> stage one (quiz) -> stage two (both corpora) -> export both
-> samples -> compare -> report. Each stage is skipped when its output is there and newer than
what it was made from, so the command can be run again after an interruption; one line per stage.
It runs in this process with the same functions the other verbs call, so no `make` is needed; the
verbs are handed in by `commands.demo` (this module does not import `commands`, which imports it).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import vago_lightning

TINY = Path("models/tiny-xtts")
CORPORA = Path("corpora/demo")
SHARDS = Path("data_shards")
REFERENCE = CORPORA / "quiz" / "wavs" / "quiz_0001.wav"
STAGES = {"quiz": "demo-quiz", "combined": "demo-combined"}  # seed name -> run name


def config_dir() -> Path:
    """Where finetune.yaml and configs/ are: the repository this package runs from."""
    for root in (Path(vago_lightning.__file__).resolve().parent.parent, Path.cwd()):
        if (root / "finetune.yaml").is_file() and (root / "configs" / "demo.yaml").is_file():
            return root
    from ..errors import UsageError

    raise UsageError("finetune.yaml and configs/demo.yaml not found: run the demo from a clone of the repository")


@dataclass
class Stage:
    name: str
    output: Path  # what it writes; it is done when this exists and is newer than `after`
    run: Callable[[], None]
    after: tuple[Path, ...] = ()
    finished: Callable[[], bool] | None = None  # another test of done, for training runs

    def done(self) -> bool:
        if not self.output.exists() or (self.finished is not None and not self.finished()):
            return False
        made = self.output.stat().st_mtime
        return all(not p.exists() or p.stat().st_mtime <= made for p in self.after)


def _fit(*configs: str) -> None:
    from ..training.cli import cli_main

    root = config_dir()
    names = ("finetune.yaml", "configs/demo.yaml", *configs)
    # The demo's own command line (`demo`) is not the training one: LightningCLI warns when it sees
    # both, so it sees only the arguments given here.
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        cli_main(["fit", *[arg for name in names for arg in ("--config", str(root / name))]])
    finally:
        sys.argv = argv


def _finished(run: str) -> Callable[[], bool]:
    """A training stage is done when its newest checkpoint is the final state of a finished run."""

    def finished() -> bool:
        from ..training.checkpoints import newest_good_checkpoint

        folder = Path("checkpoints") / run
        return folder.is_dir() and newest_good_checkpoint(folder).finished is not None

    return finished


def _training(name: str, run: str, *configs: str) -> Stage:
    return Stage(name, Path("checkpoints") / run / "best.ckpt", lambda: _fit(*configs), finished=_finished(run))


def _export(verbs: Mapping[str, Callable], name: str, run: str) -> Stage:
    best = Path("checkpoints") / run / "best.ckpt"
    out = Path("exported") / run

    def go() -> None:
        verbs["export"](best, out, speaker={"demo_host": [REFERENCE]}, overwrite=True)

    return Stage(name, out / "model.pth", go, after=(best,))


def stages(verbs: Mapping[str, Callable]) -> list[Stage]:
    """The demo's stages; `verbs` are the tool verbs by name (`commands.VERBS`)."""
    corpora = {"quiz": CORPORA / "quiz", "interview": CORPORA / "interview"}
    quiz, combined = (Path("exported") / run for run in STAGES.values())
    return [
        Stage("tiny base model", TINY / "model.pth", lambda: verbs["tiny-base"](TINY, overwrite=True)),
        Stage(
            "demo corpora",
            corpora["interview"] / "metadata.csv",
            lambda: verbs["demo-data"](CORPORA, overwrite=True),
        ),
        Stage(
            "prepare",
            SHARDS / "manifest.json",
            lambda: verbs["prepare"](corpora, SHARDS, base_model=TINY, quiet=True),
            after=(TINY / "model.pth", corpora["interview"] / "metadata.csv"),
        ),
        _training("stage one: the quiz corpus (the Milliomos run)", "demo-quiz", "configs/demo-quiz.yaml"),
        _training("stage two: both corpora (the combined run)", "demo-combined"),
        _export(verbs, "export stage one", "demo-quiz"),
        _export(verbs, "export stage two", "demo-combined"),
        Stage(
            "samples of stage two",
            Path("samples/demo-combined/index.json"),
            lambda: verbs["generate"](combined, [REFERENCE], Path("samples/demo-combined")),
            after=(combined / "model.pth",),
        ),
        Stage(
            "compare the two stages",
            Path("reports/demo/report.json"),
            lambda: verbs["compare"]({"milliomos": quiz, "combined": combined}, [REFERENCE], Path("reports/demo")),
            after=(quiz / "model.pth", combined / "model.pth"),
        ),
        Stage(
            "report: did stage two keep the quiz voice and learn the interview?",
            Path("reports/demo-combined/report.json"),
            lambda: verbs["report"]("demo-combined", Path("reports/demo-combined"), baseline="demo-quiz"),
            after=(Path("checkpoints/demo-combined/best.ckpt"),),
        ),
    ]


SERVE_HINT = (
    "serve the voice: python -m vago_lightning serve --model exported/demo-combined "
    "(then open http://127.0.0.1:8020/ or POST /v1/audio/speech with voice demo_host)"
)


def run_demo(verbs: Mapping[str, Callable], say: Callable[[str], None] = print) -> None:
    plan = stages(verbs)
    for number, stage in enumerate(plan, start=1):
        head = f"[{number}/{len(plan)}] {stage.name}"
        if stage.done():
            say(f"{head}: done already ({stage.output})")
            continue
        say(f"{head} ...")
        start = time.perf_counter()
        stage.run()
        say(f"{head}: done in {time.perf_counter() - start:.0f} s ({stage.output})")
    say(SERVE_HINT)
