"""Settings: one validated object built from ``bastion.yaml``, environment overrides, or Python.

Owns: the shape of the configuration, loading it, and error messages that name the bad key.
Environment variables are read by the caller (CLI, server start) and passed in as a mapping.

Environment overrides (applied over the file):

- ``BASTION_STORE``: the store URL.
- ``BASTION_MODEL``: the model every agent without an explicit ``model`` uses.
- ``BASTION_<SECTION>__<KEY>[__<KEY>...]``: any setting, e.g. ``BASTION_WORKER__CONCURRENCY=4``
  (values are parsed as YAML scalars, so ``4`` is a number and ``true`` a boolean).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bastion.core.errors import ConfigError
from bastion.models import ModelsSettings

DEFAULT_CONFIG_FILE = "bastion.yaml"


class WorkerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int = Field(default=1, ge=1, le=256)
    lease_seconds: float = Field(default=30.0, gt=0)
    poll_interval: float = Field(default=0.25, gt=0)
    watch_interval: float = Field(default=1.0, gt=0)
    #: How often the worker looks for cancellations of the runs it executes.
    cancel_poll_interval: float = Field(default=0.05, gt=0, le=5)
    #: On SIGTERM, how long runs in flight may take to reach a safe point before being
    #: abandoned (a tool that may change the world is let finish within this).
    shutdown_grace: float = Field(default=10.0, ge=0)
    #: At start, reclaim at once the runs of workers of this host that died (see
    #: ``bastion.engine._identity``); turn off if hosts share a hostname but not a PID space.
    reclaim_local: bool = True
    #: Where the worker writes its health report (JSON), read by `bastion worker --health`.
    health_file: str | None = None


class SandboxSettings(BaseModel):
    """The ``sandbox:`` section: where ``run_python`` executes model-written code."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["namespaces", "remote"] = "namespaces"
    #: Pre-isolated, warmed sandboxes kept ready (namespaces backend).
    pool_size: int = Field(default=2, ge=0, le=64)
    #: Extra modules imported in the warm sandboxes (e.g. pandas) so code does not pay for them.
    preload: list[str] = Field(default_factory=list)
    wall_seconds: float = Field(default=20.0, gt=0, le=3600)
    cpu_seconds: int = Field(default=20, ge=1, le=3600)
    memory_mb: int = Field(default=512, ge=16)
    #: remote backend: the sandbox service's URL and the env variable holding its API key.
    remote_url: str | None = None
    api_key_env: str | None = "BASTION_SANDBOX_API_KEY"


class LimitsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_turns: int = Field(default=20, ge=1)
    max_wall_seconds: float = Field(default=600.0, gt=0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_cost_usd: float | None = Field(default=None, gt=0)
    max_invalid_outputs: int = Field(default=3, ge=0)
    max_replans: int = Field(default=2, ge=0)


class AgentSettings(BaseModel):
    """An agent declared in YAML. Its tools are named; they must be registered in Python (or
    found in ``tool_modules``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instructions: str = ""
    model: str | None = None
    tools: list[str] = Field(default_factory=list)
    mode: Literal["react", "plan"] = "react"
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    review_below_confidence: float | None = Field(default=None, ge=0, le=1)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str = "sqlite:///bastion.db"
    default_model: str = "scripted:default"
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    agents: dict[str, AgentSettings] = Field(default_factory=dict)
    #: Python modules whose module-level ``Tool`` objects are registered at start.
    tool_modules: list[str] = Field(default_factory=list)
    #: The ``guards:`` section (docs/guards.md); absent means runs execute without guards.
    #: Validated by the guards' own settings when Bastion is built.
    guards: dict[str, Any] | None = None
    #: Present: the ``run_python`` tool is registered and runs code in this sandbox.
    sandbox: SandboxSettings | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "settings") -> Settings:
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise config_error(exc, source) from None

    @classmethod
    def load(
        cls, path: str | Path | None = None, *, env: Mapping[str, str] | None = None
    ) -> Settings:
        """Read ``path`` (default ``./bastion.yaml`` if present), then apply ``env`` overrides."""
        data: dict[str, Any] = {}
        source = "defaults"
        file = Path(path) if path is not None else Path(DEFAULT_CONFIG_FILE)
        if path is not None and not file.exists():
            raise ConfigError(f"config file {file} does not exist", hint="Check the --config path.")
        if file.exists():
            source = str(file)
            data = _read_yaml(file)
        if env:
            data = apply_env(data, env)
            if any(k.startswith("BASTION_") for k in env):
                source += " + environment"
        return cls.from_mapping(data, source=source)


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{file} is not valid YAML{where}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{file} must hold a mapping of settings, not {type(loaded).__name__}")
    return loaded


def apply_env(data: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = _deep_copy(data)
    for key, raw in env.items():
        if not key.startswith("BASTION_") or not raw:
            continue
        name = key[len("BASTION_") :].lower()
        if name == "store":
            out["store"] = raw
        elif name == "model":
            out["default_model"] = raw
        elif "__" in name:
            path = name.split("__")
            node = out
            for part in path[:-1]:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
            node[path[-1]] = _env_value(key, raw)
    return out


def _env_value(key: str, raw: str) -> Any:
    """An override's value: the string as given (``0123`` stays ``"0123"``, ``no`` stays
    ``"no"``; numbers and booleans are converted by the setting's own type), except an explicit
    YAML list or mapping (``[en, de]``, ``{a: 1}``) for settings that take one."""
    text = raw.strip()
    if not (text.startswith("[") or text.startswith("{")):
        return raw
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key} is not a valid YAML list or mapping: {exc}") from None


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def config_error(exc: ValidationError, source: str) -> ConfigError:
    """A ConfigError that names each bad key as a dotted path."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting (check its spelling and section)"
        problems.append(f"{where}: {msg}")
    return ConfigError(
        f"invalid configuration in {source}: " + "; ".join(problems),
        hint="Fix the named keys; `docs/configuration.md` lists every setting.",
        problems=problems,
    )
