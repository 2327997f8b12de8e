"""One cached virtual environment per peer under ``benchmarks/.cache/venvs/<peer>``."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "venvs"
STAMP = ".infergate-bench-stamp"


class PeerInstallError(RuntimeError):
    """pip could not install a peer (the message carries pip's own error)."""


def requirements_digest(requirements: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:16]


def ensure_venv(peer: str, requirements: Sequence[str], cache: Path = CACHE) -> Path:
    """The venv's python for ``peer``, created and installed on first use.

    A stamp file holds a digest of the requirements, so changing them reinstalls and an
    interrupted install (no stamp) is retried rather than trusted.
    """
    root = cache / peer
    python = root / "bin" / "python"
    stamp = root / STAMP
    digest = requirements_digest(requirements)
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    cache.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        # The base interpreter, not the project's venv: a venv made from a venv would
        # still be isolated, but base_prefix keeps the peer independent of ours.
        base = Path(getattr(sys, "_base_executable", sys.executable))
        subprocess.run([str(base), "-m", "venv", str(root)], check=True)
    print(f"benchmarks: installing {peer} into {root} ({', '.join(requirements)})", flush=True)
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        errors = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("WARNING: Location"))
        raise PeerInstallError(f"pip install for {peer} failed ({done.returncode}):\n{errors[-2000:]}")
    stamp.write_text(digest + "\n")
    return python


def package_version(python: Path, distribution: str) -> str:
    """Installed version of ``distribution`` in that venv ('?' when unknown)."""
    done = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({distribution!r}))"],
        capture_output=True, text=True, check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else "?"
