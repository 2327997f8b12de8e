"""The model repository: discover ``<root>/<model>/<version>/model.onnx`` (or ``score.py``),
load what each model's version policy serves, and hand out loaded versions.

Layout (Triton-like)::

    <root>/<model>/config.yaml        optional (or config.json); see docs/scoring.md
    <root>/<model>/<version>/model.onnx   versions are positive integers
    <root>/<model>/<version>/score.py     an AzureML entry script instead of model.onnx

A broken model or config never stops the others: the failure is recorded (the index
shows the version UNAVAILABLE with a reason naming model, version, file and field) and
``ready()`` stays false until it is fixed and reloaded.
"""

from __future__ import annotations

import asyncio
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from scoring.batching import AUTO_MIN_ROWS, auto_max_batch_size
from scoring.config import ModelConfig, ScoringConfig, find_config_file, load_model_config
from scoring.errors import (
    ConfigError,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    ScoringError,
    VersionNotFound,
)
from scoring.model import Model
from scoring.runner import OrtRunner
from scoring.types import ModelId, ModelMetadata, ModelState, ModelStatus, TensorSpec

log = logging.getLogger("infergate.scoring")

MODEL_FILE = "model.onnx"
SCRIPT_FILE = "score.py"
# Model names become URL path segments and folder names: no separators, no dot-dot.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
DEFAULT_EXECUTOR_THREADS = 16


@dataclass
class _Version:
    version: int
    state: ModelState
    reason: str = ""
    model: Model | None = None


@dataclass
class _Entry:
    """What the repository knows about one model folder."""

    name: str
    path: Path
    config: ModelConfig | None = None
    versions: dict[int, _Version] = field(default_factory=dict)  # the ones the policy serves
    excluded: list[int] = field(default_factory=list)  # on disk, left out by the policy
    policy: str = ""
    error: str = ""  # a model-level failure (config, no versions)
    unloaded: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _files_bytes(folder: Path) -> int:
    """Bytes of every file under a version folder (the graph and any external weights)."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _settle_rows(config: ModelConfig, auto_rows: int) -> tuple[ModelConfig, int]:
    """``config`` with ``batching.max_batch_size`` settled (``auto_rows`` when unset), and it."""
    rows = config.batching.rows_limit(auto_rows)
    return replace(config, batching=replace(config.batching, max_batch_size=rows)), rows


def check_model_name(name: str) -> None:
    """Raise InvalidInput for a name that is not a plain folder name (path traversal)."""
    if not _NAME.match(name) or name in (".", "..") or ".." in name:
        raise InvalidInput(f"invalid model name {name!r}", field="name")


def batchable(inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> bool:
    """Dim 0 of every input and output is dynamic: requests can be stacked on it."""
    tensors = inputs + outputs
    return bool(inputs) and all(len(t.shape) >= 1 and t.shape[0] == -1 for t in tensors)


class ModelRepository:
    """Every model of one repository folder (or one ``--entry-script``)."""

    def __init__(self, root: Path, config: ScoringConfig | None = None) -> None:
        self.root = Path(root)
        self.config = config or ScoringConfig()
        self._entries: dict[str, _Entry] = {}
        self._executor: ThreadPoolExecutor | None = None
        # --entry-script mode: (script, model_dir, name) instead of a folder scan.
        self._script: tuple[Path, Path | None, str] | None = None

    @classmethod
    def for_entry_script(
        cls,
        script: Path,
        model_dir: Path | None = None,
        name: str = "default",
        config: ScoringConfig | None = None,
    ) -> ModelRepository:
        """A repository serving one AzureML entry script as ``<name>`` version 1;
        ``AZUREML_MODEL_DIR`` is ``model_dir`` (default: the script's folder)."""
        check_model_name(name)
        repo = cls(Path(script).parent, config)
        repo._script = (Path(script), None if model_dir is None else Path(model_dir), name)
        return repo

    # ------------------------------------------------------------------ lifecycle

    @property
    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            threads = self.config.executor_threads or DEFAULT_EXECUTOR_THREADS
            self._executor = ThreadPoolExecutor(threads, thread_name_prefix="infergate-run")
        return self._executor

    async def start(self) -> None:
        """Load every model per its version policy, off the loop. Failures are recorded."""
        if self._script is not None:
            _, _, name = self._script
            self._entries[name] = _Entry(name=name, path=self.root)
        else:
            if not self.root.is_dir():
                raise ModelLoadError(f"model repository {self.root} is not a folder")
            for path in sorted(self.root.iterdir()):
                if not path.is_dir() or path.name.startswith((".", "_")):
                    continue
                try:
                    check_model_name(path.name)
                except InvalidInput:
                    log.warning("skipping %s: not a valid model name", path)
                    continue
                self._entries[path.name] = _Entry(name=path.name, path=path)
        for name in list(self._entries):
            try:
                await self._load(self._entries[name])
            except ScoringError as exc:
                log.error("%s", exc)

    async def close(self, timeout_s: float = 30.0) -> None:
        """Finish queued and in-flight work (bounded), stop batchers, release everything."""
        models = [v.model for e in self._entries.values() for v in e.versions.values() if v.model]
        if models:
            await asyncio.gather(*(m.close(timeout_s) for m in models), return_exceptions=True)
        for entry in self._entries.values():
            for v in entry.versions.values():
                v.model = None
                v.state, v.reason = "UNAVAILABLE", "repository closed"
        if self._executor is not None:
            executor, self._executor = self._executor, None
            # shutdown(wait=True) blocks: wait for the last runs in a side thread.
            await asyncio.to_thread(executor.shutdown, True, cancel_futures=True)

    # ------------------------------------------------------------------ queries

    def model_names(self) -> list[str]:
        return sorted(self._entries)

    def index(self) -> list[ModelStatus]:
        """Every model and version found, with its state and the reason when not READY."""
        rows: list[ModelStatus] = []
        for name in sorted(self._entries):
            entry = self._entries[name]
            if entry.error:
                rows.append(ModelStatus(name, None, "UNAVAILABLE", entry.error))
            for version in sorted(entry.versions):
                v = entry.versions[version]
                rows.append(ModelStatus(name, version, v.state, v.reason))
            for version in entry.excluded:
                rows.append(
                    ModelStatus(name, version, "UNAVAILABLE", f"not served: version_policy {entry.policy}")
                )
        rows.sort(key=lambda r: (r.name, r.version or 0))
        return rows

    def ready(self) -> bool:
        """Every model that should be loaded (not explicitly unloaded) is READY."""
        for entry in self._entries.values():
            if entry.unloaded:
                continue
            if entry.error or not entry.versions:
                return False
            if any(v.state != "READY" for v in entry.versions.values()):
                return False
        return True

    def get(self, name: str, version: int | None = None) -> Model:
        """The loaded version (None: the newest READY one).

        Raises ModelNotFound, VersionNotFound (also when the policy excludes it) or
        ModelNotReady (loading, unloaded or failed, with the reason).
        """
        entry = self._entries.get(name)
        if entry is None:
            raise ModelNotFound(name)
        if version is None:
            best = None  # the newest READY version: one pass, no sort (every request asks)
            for v in entry.versions.values():
                if v.state == "READY" and v.model is not None and (best is None or v.version > best.version):
                    best = v
            if best is not None:
                assert best.model is not None
                return best.model
            newest = max(entry.versions.values(), key=lambda v: v.version, default=None)
            reason = entry.error or (newest.reason or newest.state.lower() if newest else "no versions")
            raise ModelNotReady(name, None, reason)
        slot = entry.versions.get(version)
        if slot is None:
            raise VersionNotFound(name, version)
        if slot.state != "READY" or slot.model is None:
            raise ModelNotReady(name, version, slot.reason or slot.state.lower())
        return slot.model

    # ------------------------------------------------------------------ run-time changes

    async def load(self, name: str) -> None:
        """(Re)load ``name`` from disk per its version policy; new versions are swapped in
        and replaced ones drained. Raises InvalidInput (bad name), ModelNotFound or
        ModelLoadError (also recorded in the index)."""
        check_model_name(name)
        entry = self._entries.get(name)
        if entry is None:
            # Safe to join: check_model_name admits no separator and no "..". Symlinked
            # model folders are fine (Kubernetes volume mounts are made of them).
            path = self.root / name
            if self._script is not None or not path.is_dir():
                raise ModelNotFound(name)
            entry = self._entries[name] = _Entry(name=name, path=path)
        await self._load(entry)

    async def unload(self, name: str) -> None:
        """Drain then release every version of ``name``; the index shows "unloaded"."""
        check_model_name(name)
        entry = self._entries.get(name)
        if entry is None:
            raise ModelNotFound(name)
        async with entry.lock:
            entry.unloaded = True
            models: list[Model] = []
            for v in entry.versions.values():
                if v.model is not None:
                    v.model.stop_accepting()  # at once, before the drain gets scheduled
                    models.append(v.model)
                v.state, v.reason = "UNLOADING", "unloading"
            await asyncio.gather(*(m.close(self.config.drain_timeout_s) for m in models))
            for v in entry.versions.values():
                v.model = None
                v.state, v.reason = "UNAVAILABLE", "unloaded"

    # ------------------------------------------------------------------ loading

    async def _load(self, entry: _Entry) -> None:
        async with entry.lock:
            await self._load_locked(entry)

    async def _load_locked(self, entry: _Entry) -> None:
        loop = asyncio.get_running_loop()
        entry.unloaded = False
        entry.error = ""
        if self._script is not None:
            script, model_dir, _ = self._script
            plan: list[tuple[int, Path]] = [(1, script)]
            entry.config = self.config.model_defaults
            entry.policy, entry.excluded = "latest: 1", []
        else:
            try:
                plan = self._plan(entry)
            except ModelLoadError as exc:
                entry.error = exc.message
                for v in entry.versions.values():
                    if v.model is None:
                        v.state, v.reason = "UNAVAILABLE", exc.message
                raise
        assert entry.config is not None
        config = entry.config
        old = dict(entry.versions)
        new: dict[int, _Version] = {}
        failures: list[str] = []
        for version, path in plan:
            slot = _Version(version, "LOADING")
            if version not in old or old[version].model is None:
                entry.versions[version] = slot  # visible as LOADING meanwhile
            try:
                model = await loop.run_in_executor(
                    self.executor, self._build, entry.name, version, path, config
                )
                await model.start()
            except ScoringError as exc:
                slot.state, slot.reason = "UNAVAILABLE", exc.message
                failures.append(exc.message)
                log.error("%s", exc.message)
            else:
                slot.state, slot.model = "READY", model
                log.info("loaded %s (%s)", model.metadata.id, ", ".join(model.metadata.providers) or "script")
            new[version] = slot
        entry.versions = new
        # Drain and release the versions that were replaced or are no longer served.
        retired = [
            v.model for k, v in old.items() if v.model is not None and (k not in new or new[k].model is not v.model)
        ]
        if retired:
            await asyncio.gather(*(m.close(self.config.drain_timeout_s) for m in retired))
        if failures:
            raise ModelLoadError("; ".join(failures))

    def _plan(self, entry: _Entry) -> list[tuple[int, Path]]:
        """Read the config and pick the versions to serve: [(version, version folder)]."""
        name = entry.name
        if not entry.path.is_dir():
            raise ModelLoadError(f"model '{name}': folder {entry.path} is gone")
        try:
            entry.config = load_model_config(entry.path, self.config.model_defaults)
        except ConfigError as exc:
            raise ModelLoadError(f"model '{name}': {self._config_file(name)}: {exc.message}") from exc
        except OSError as exc:
            raise ModelLoadError(f"model '{name}': cannot read its config: {exc}") from exc
        found: list[int] = []
        for path in entry.path.iterdir():
            if path.is_dir() and path.name.isdigit() and int(path.name) > 0:
                found.append(int(path.name))
        if not found:
            raise ModelLoadError(
                f"model '{name}': no version folders (positive integers like {name}/1/{MODEL_FILE})"
            )
        policy = entry.config.version_policy
        served = policy.select(found)
        entry.policy = policy.describe()
        entry.excluded = sorted(set(found) - set(served))
        if not served:
            raise ModelLoadError(
                f"model '{name}': version_policy {entry.policy} matches none of the versions {sorted(found)}"
            )
        return [(v, entry.path / str(v)) for v in served]

    def _build(self, name: str, version: int, path: Path, config: ModelConfig) -> Model:
        """Create one model version (blocking; runs in the executor)."""
        label = f"model '{name}' version {version}"
        model_id = ModelId(name, version)
        if path.is_file():  # --entry-script
            return self._build_script(model_id, path, self._script[1] if self._script else None, config)
        onnx_file, script_file = path / MODEL_FILE, path / SCRIPT_FILE
        if script_file.is_file():  # a score.py wins: it is the code that uses the model files
            return self._build_script(model_id, script_file, path, config)
        if onnx_file.is_file():
            try:
                runner = OrtRunner.load(onnx_file, config, label)
            except ConfigError as exc:
                raise ModelLoadError(f"{label}: {self._config_file(name)}: {exc.message}") from exc
            except ModelLoadError as exc:
                if exc.message.startswith(label):
                    raise
                raise ModelLoadError(f"{label}: {MODEL_FILE}: {exc.message}") from exc
            batched = batchable(runner.inputs, runner.outputs)
            enabled = config.batching.enabled
            if enabled and not batched:
                raise ModelLoadError(
                    f"{label}: {self._config_file(name)}: batching.enabled: true needs a dynamic "
                    "dim 0 on every input and output of the model"
                )
            batched = batched if enabled is None else enabled
            config, rows = _settle_rows(config, auto_max_batch_size(runner.inputs, _files_bytes(path)))
            metadata = ModelMetadata(
                id=model_id,
                platform="onnxruntime_onnx",
                inputs=runner.inputs,
                outputs=runner.outputs,
                providers=runner.providers,
                batched=batched,
                max_batch_size=rows if batched else 0,
            )
            return Model(metadata, config, runner=runner)
        raise ModelLoadError(f"{label}: {path}: holds neither {MODEL_FILE} nor {SCRIPT_FILE}")

    def _build_script(self, model_id: ModelId, script: Path, model_dir: Path | None, config: ModelConfig) -> Model:
        from scoring.entry_script import EntryScript  # only entry-script models need it

        label = f"model '{model_id.name}' version {model_id.version}"
        entry = EntryScript.load(script, model_dir or script.parent, self.executor, label=label)
        if config.batching.enabled and not entry.batched:
            raise ModelLoadError(
                f"{label}: {self._config_file(model_id.name)}: batching.enabled: true needs "
                "run_batch() in score.py"
            )
        batched = entry.batched and config.batching.enabled is not False
        config, rows = _settle_rows(config, AUTO_MIN_ROWS)
        metadata = ModelMetadata(
            id=model_id,
            platform="azureml_entry_script",
            inputs=(),
            outputs=(),
            providers=(),
            batched=batched,
            max_batch_size=rows if batched else 0,
            entry_script=True,
            swagger=entry.swagger,
        )
        return Model(metadata, config, entry=entry)

    def _config_file(self, name: str) -> str:
        try:
            path = find_config_file(self.root / name)
        except ConfigError:
            return "config"
        return path.name if path else "config (defaults)"

