"""The ``infergate`` command: one front door that hands each subcommand to its package.

This module is the one place allowed to reach both ``server`` and ``router``; it imports
the chosen subcommand lazily so that ``infergate serve`` never loads the router.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, what it does). Each module exposes ``main(argv: list[str]) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("server.__main__", "run the scoring server"),
    "route": ("router.__main__", "run the router in front of scoring replicas"),
    "up": ("router.launcher", "run N scoring replicas behind the router on this machine"),
    "render-k8s": ("router.k8s", "render Kubernetes manifests from AzureML deployment files"),
}


def _usage() -> str:
    lines = ["usage: infergate <command> [options]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines.append("\n`infergate <command> --help` describes each command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"infergate: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
