"""Write docs/cli.md, the command reference, from the click tree (every command's --help).

Run from the repository root after changing a command: ``python scripts/gen_cli_docs.py``.
``tests/cli/test_cli_docs.py`` fails while the committed file differs from what this writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 100

HEAD = """# The `sgxlaunch` command line

Generated from the click tree by `python scripts/gen_cli_docs.py`; do not edit by hand (a test
checks that this file is current).

## Conventions

- **Exit codes**: 0 success; 1 a verification failed or a launch was denied; 2 a usage error or
  malformed input. Results go to stdout; messages to stderr, one line first, detail after.
- **Files written** are always named by `-o/--output`; an existing file is refused unless
  `--force` is given (where offered), and nothing is written when a command fails.
- **`--home` and `--machine`** work before or after the command (`sgxlaunch --home H log show`
  or `sgxlaunch log show --home H`); the one after the command wins, then the one before, then
  `$SGXLAUNCH_HOME` / `$SGXLAUNCH_MACHINE`, then the defaults `~/.local/share/sgxlaunch` and
  `~/.local/state/sgxlaunch/machine.json`.
- **`--json`** prints exactly one JSON object, on success and on failure (`docs/json.md`).
- **Input sizes**: SGXS images are streamed (no size limit). Any other input is read whole up to
  64 MiB; `$SGXLAUNCH_MAX_INPUT_BYTES` sets another limit. Signed documents and key files have
  their own, smaller caps set by their formats (`docs/policy.md`).
- **Broken pipes** (`sgxlaunch inspect x.sig | head -2`) end the command quietly with exit 0.

## Shell completion

click provides completion for bash (4.4+), zsh and fish through the `_SGXLAUNCH_COMPLETE`
environment variable:

```
# bash: add to ~/.bashrc
eval "$(_SGXLAUNCH_COMPLETE=bash_source sgxlaunch)"
# zsh: add to ~/.zshrc
eval "$(_SGXLAUNCH_COMPLETE=zsh_source sgxlaunch)"
# fish: save once
_SGXLAUNCH_COMPLETE=fish_source sgxlaunch > ~/.config/fish/completions/sgxlaunch.fish
```

To avoid running `sgxlaunch` at every shell start, save the script once
(`_SGXLAUNCH_COMPLETE=bash_source sgxlaunch > ~/.sgxlaunch-complete.bash`) and source that file.

## Commands
"""


def _walk(
    command: click.Command, ctx: click.Context
) -> list[tuple[str, click.Command, click.Context]]:
    out = [(ctx.command_path, command, ctx)]
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            sub = command.commands[name]
            if getattr(sub, "hidden", False):
                continue
            child = click.Context(
                sub, info_name=name, parent=ctx, terminal_width=WIDTH, max_content_width=WIDTH
            )
            out.extend(_walk(sub, child))
    return out


def render() -> str:
    """The whole of docs/cli.md."""
    from sgxlaunch.cli import load_all_commands, main

    load_all_commands()

    root = main.make_context("sgxlaunch", ["--help"], resilient_parsing=True)
    root.terminal_width = root.max_content_width = WIDTH
    parts = [HEAD]
    for path, command, ctx in _walk(main, root):
        parts.append(f"\n### `{path}`\n\n```\n{command.get_help(ctx)}\n```\n")
    return "".join(parts)


def main() -> int:
    (ROOT / "docs" / "cli.md").write_text(render())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    raise SystemExit(main())
