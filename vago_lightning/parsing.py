"""What both command lines share: a bad flag or config key is one `error:` line, with the closest
known key when there is one, instead of a page of usage."""

from __future__ import annotations

import difflib
import re
import sys

from jsonargparse import ArgumentParser

# Keys as jsonargparse names them in its messages: --model.lr, 'model.lrr', "trainer.max_stepz".
_KEY = re.compile(r"""(?:--|['"])([A-Za-z_][\w.]*)""")


def known_keys(parser) -> list[str]:
    keys = []
    for action in parser._actions:
        keys += [o.lstrip("-") for o in action.option_strings if o.startswith("--")]
    return keys


def suggestion(message: str, keys: list[str]) -> str:
    """`; did you mean --model.lr?` for the first unknown key in `message` that is close to a known one."""
    for word in _KEY.findall(message):
        if word in keys:
            continue
        close = difflib.get_close_matches(word, keys, n=1, cutoff=0.75)
        if close:
            return f"; did you mean --{close[0]}?"
    return ""


class OneLineErrors:
    """Mixin for a jsonargparse parser: errors are one line on stderr, then exit code 2."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        first = " ".join(str(message).split())  # jsonargparse's messages may span lines
        hint = suggestion(first, known_keys(parser))
        sys.stderr.write(f"error: {first}{hint} (see --help)\n")
        sys.exit(2)


class Parser(OneLineErrors, ArgumentParser):
    pass
