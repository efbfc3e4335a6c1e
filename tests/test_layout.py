"""How the code is laid out: imports run down the layers only (inference never imports training, the
shared modules import no stage), and a verb imports only what it uses."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vago_lightning"

# Each area of the package and its layer: a module may import its own area, any lower layer, and in
# layer 0 the other shared modules. Areas of one layer never import each other (training and serve
# are peers). A new module or folder takes its place here.
LAYERS = {
    "errors": 0,
    "constants": 0,
    "devices": 0,
    "files": 0,
    "log": 0,
    "parsing": 0,
    "metrics": 0,
    "normalise": 0,
    "asr": 0,
    "cer": 0,
    "__init__": 0,
    "model": 1,
    "data": 2,
    "inference": 3,
    "training": 4,
    "serve": 4,
    "demo": 5,
    "commands": 6,
    "__main__": 7,
}


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every vago_lightning module `path` imports, those inside functions too."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names] if not node.module else [target]
            found += [(node.lineno, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, _module(name)) for line, name in found if name.split(".")[0] == "vago_lightning"]


def _module(name: str) -> str:
    """`name`, or the module it is an attribute of (`from . import __version__`)."""
    path = PACKAGE.parent.joinpath(*name.split("."))
    if path.is_dir() or path.with_suffix(".py").is_file() or "." not in name:
        return name
    return name.rsplit(".", 1)[0]


def test_imports_run_down_the_layers_only():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = _area(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        assert own in LAYERS, f"{path}: a new area of the package; give it a layer in LAYERS"
        for line, target in _imports(path):
            other = _area(target)
            if other == own:
                continue
            assert other in LAYERS, f"{path}:{line} imports {target}, an area LAYERS does not name"
            if LAYERS[other] < LAYERS[own] or LAYERS[other] == LAYERS[own] == 0:
                continue
            wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({own}, layer {LAYERS[own]}) imports {target}")
    assert not wrong, "imports that run back up the layers:\n" + "\n".join(wrong)


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code` (in this checkout, as the tests run)."""
    script = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return set(out.splitlines()[-1].split())


def test_a_tools_help_imports_no_torch():
    # Every tool verb, and those added later: `VERB --help` reads the signature, nothing heavy.
    loaded = _modules_after(
        "import contextlib, io\n"
        "from vago_lightning.__main__ import main\n"
        "from vago_lightning.commands import VERBS\n"
        "for verb in VERBS:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main([verb, '--help'])\n"
        "import vago_lightning.inference.report, vago_lightning.demo.corpora  # report and demo-data run without it"
    )
    assert "torch" not in loaded and "lightning" not in loaded


def test_the_tools_import_no_lightning_and_generate_no_librosa(
    tiny_base, demo_corpora, trained_ckpt, exported, tmp_path
):
    # prepare, export and generate, run for real: Lightning is for training only (seconds of start-up),
    # and the judge's speaker embeddings need no librosa (numba: seconds more).
    quiz = demo_corpora[0] / "quiz"
    two = tmp_path / "two"
    (two / "wavs").mkdir(parents=True)
    rows = (quiz / "metadata.csv").read_text(encoding="utf-8").splitlines()[:3]
    (two / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    for row in rows[1:]:
        (two / row.split("|")[0]).write_bytes((quiz / row.split("|")[0]).read_bytes())
    texts = tmp_path / "texts.txt"
    texts.write_text("Jó estét!\n", encoding="utf-8")
    runs = [
        ["prepare", "--corpus", f"two={two}", "--out", str(tmp_path / "shards"), "--base_model", str(tiny_base)],
        ["export", "--ckpt", str(trained_ckpt), "--out", str(tmp_path / "export")],
        ["generate", "--model", str(exported), "--reference", str(quiz / rows[1].split("|")[0]), "--texts", str(texts)]
        + ["--temperature", "0.65", "--max_new_tokens", "8", "--out", str(tmp_path / "samples")],
    ]
    loaded = _modules_after(
        "import contextlib, io\n"
        "from vago_lightning.__main__ import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert [main(args) for args in {runs!r}] == [0, 0, 0]"
    )
    assert "torch" in loaded and "TTS" in loaded  # they did run
    assert "lightning" not in loaded and "lightning.pytorch" not in loaded
    assert "numba" not in loaded and "librosa.filters" not in loaded
