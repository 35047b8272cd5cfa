"""The operator's prices.yml, and the WhatToMine-format source it names (a file, or a URL fetched
with a timeout and cached on disk). Every default here is explained in docs/economics.md."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from toolkit.economics.whattomine import WtmFile, norm
from toolkit.errors import BadInputError, RigpivotError, describe_validation_error


class PriceSourceError(RigpivotError):
    """The mining price source could not be read and no cached copy exists."""

    exit_code = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PowerSlot(_Strict):
    start: datetime.time  # "07:00": this price holds from here to the next slot's start
    price: float = Field(ge=0, description="Currency per kWh.")


class PowerPrice(_Strict):
    flat: float | None = Field(default=None, ge=0, description="Currency per kWh, all day.")
    time_of_day: list[PowerSlot] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> PowerPrice:
        if (self.flat is None) == (self.time_of_day is None):
            raise ValueError("give either flat (a price per kWh) or time_of_day (a table)")
        if self.time_of_day is not None:
            starts = [s.start for s in self.time_of_day]
            if not starts:
                raise ValueError("time_of_day needs at least one slot")
            if len(set(starts)) != len(starts):
                raise ValueError("time_of_day has two slots starting at the same time")
            self.time_of_day.sort(key=lambda s: s.start)
        return self

    @staticmethod
    def _minutes(t: datetime.time) -> int:
        return t.hour * 60 + t.minute

    def mean_per_kwh(self) -> float:
        """The time-weighted mean over a day: what a day costs a card that runs around the clock
        (mining and inference both do). The last slot runs on to the first one's start."""
        if self.flat is not None:
            return self.flat
        slots = self.time_of_day or []
        total = 0.0
        for i, s in enumerate(slots):
            end = self._minutes(slots[(i + 1) % len(slots)].start)
            length = (end - self._minutes(s.start)) % 1440 or 1440
            total += s.price * length
        return total / 1440

    def at(self, t: datetime.time) -> float:
        if self.flat is not None:
            return self.flat
        slots = self.time_of_day or []
        before = [s for s in slots if s.start <= t]
        return (before[-1] if before else slots[-1]).price


# Miners and WhatToMine spell some algorithms differently (compared after `norm`).
DEFAULT_ALIASES = {"autolykos2": "autolykos", "daggerhashimoto": "ethash"}


class MiningPrices(_Strict):
    whattomine: str = Field(
        description="A WhatToMine-format JSON: a path (relative to prices.yml) or an http(s) URL."
    )
    btc_price: float | None = Field(
        default=None,
        gt=0,
        description="One bitcoin in `currency`; default: the file's Bitcoin entry.",
    )
    pool_fee: float = Field(default=0.01, ge=0, lt=1, description="The pool's cut of the rewards.")
    fetch_timeout_s: float = Field(default=10, gt=0, le=300)
    algorithm_aliases: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ALIASES))

    @field_validator("algorithm_aliases")
    @classmethod
    def _normalised(cls, v: dict[str, str]) -> dict[str, str]:
        return {norm(k): norm(x) for k, x in v.items()}


class Rental(_Strict):
    gpu: str = Field(description="Matched in the card's name (`RTX 3090`), `*` for any card.")
    per_hour: float | None = Field(default=None, ge=0, description="Currency per GPU-hour rented.")
    per_million_tokens: float | None = Field(
        default=None, ge=0, description="Currency per 1M tokens."
    )

    @model_validator(mode="after")
    def _a_price(self) -> Rental:
        if self.per_hour is None and self.per_million_tokens is None:
            raise ValueError(f"{self.gpu}: give per_hour, per_million_tokens or both")
        return self

    def matches(self, card_name: str) -> bool:
        return self.gpu == "*" or norm(self.gpu) in norm(card_name)


class AiPrices(_Strict):
    rental: list[Rental] = Field(min_length=1)
    utilisation: float = Field(gt=0, le=1, description="Share of the day a card is paid for.")
    platform_fee: float = Field(ge=0, lt=1, description="The marketplace's cut.")
    basis: Literal["best", "hour", "tokens"] = Field(
        default="best", description="Which price to use where a card has both: the better, or one."
    )

    def rental_for(self, card_name: str) -> Rental | None:
        """The most specific entry that matches the card (longest name; `*` last)."""
        found = [r for r in self.rental if r.matches(card_name)]
        found.sort(key=lambda r: -1 if r.gpu == "*" else len(norm(r.gpu)), reverse=True)
        return found[0] if found else None


class SwitchingCosts(_Strict):
    convert_downtime_hours: float = Field(default=1.0, ge=0)
    rollback_downtime_hours: float = Field(default=0.5, ge=0)
    extra_cost: float = Field(
        default=0.0, ge=0, description="Per switch, e.g. a reflash or a visit."
    )
    from_journal: bool = Field(default=True, description="Measure downtime from the run journals.")


class DecisionSettings(_Strict):
    margin: float = Field(
        default=0.10, ge=0, le=1, description="Lead the other side needs, 0.10 = 10 %."
    )
    minimum_stay_hours: float = Field(default=24.0, ge=0)
    outlier_factor: float = Field(default=3.0, gt=1)
    outlier_window: int = Field(default=20, ge=3, le=1000)
    outlier_min_samples: int = Field(default=3, ge=1)


class Prices(_Strict):
    currency: str = "USD"
    power: PowerPrice
    mining: MiningPrices
    ai: AiPrices
    switching: SwitchingCosts = SwitchingCosts()
    decision: DecisionSettings = DecisionSettings()


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BadInputError(f"{path} does not exist") from None
    except OSError as e:
        raise BadInputError(f"{path}: cannot read it: {e.strerror}") from e
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise BadInputError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from e


def load_prices(path: Path) -> Prices:
    """prices.yml, validated; a bad or missing field is a BadInputError naming file and field."""
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: expected a mapping (power, mining, ai, ...)")
    try:
        prices = Prices.model_validate(data)
    except ValidationError as e:
        raise BadInputError(f"{path}: invalid prices file\n{describe_validation_error(e)}") from e
    src = prices.mining.whattomine
    if not is_url(src) and not Path(src).is_absolute():
        prices.mining.whattomine = str(path.parent / src)
    return prices


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rigpivot" / "prices"


def _parse(raw: bytes, where: str) -> WtmFile:
    try:
        return WtmFile.model_validate(json.loads(raw))
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not JSON ({e.msg} at line {e.lineno})") from e
    except ValidationError as e:
        raise ValueError(
            f"{where}: not a WhatToMine-format JSON\n{describe_validation_error(e)}"
        ) from e


def load_whattomine(
    source: str, cache_dir: Path | None = None, timeout_s: float = 10
) -> tuple[WtmFile, list[str]]:
    """The coins, and notes for the report (a failed fetch served from the cache).

    A file that is missing or garbled is bad input. A URL is fetched with a timeout and its
    answer cached; when the fetch fails (or answers garbage) the cached copy is used and the
    failure named; with no cached copy the failure stops the run."""
    if not is_url(source):
        path = Path(source)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise BadInputError(f"mining.whattomine: cannot read {path}: {e.strerror}") from e
        try:
            return _parse(raw, str(path)), []
        except ValueError as e:
            raise BadInputError(str(e)) from e
    cache = (cache_dir or default_cache_dir()) / (
        hashlib.sha256(source.encode()).hexdigest()[:16] + ".json"
    )
    try:
        req = urllib.request.Request(source, headers={"User-Agent": "rigpivot-advise"})
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            raw = resp.read()
        coins = _parse(raw, source)
    except (OSError, ValueError) as e:  # URLError, HTTPError, timeouts are OSErrors
        reason = _reason(e)
        if not cache.is_file():
            raise PriceSourceError(
                f"mining.whattomine: {source}: {reason}; no cached copy in {cache.parent}"
            ) from e
        age = datetime.datetime.now().timestamp() - cache.stat().st_mtime
        note = (
            f"mining prices: {source}: {reason}; using the copy cached "
            f"{age / 3600:.1f} h ago ({cache})"
        )
        return _parse(cache.read_bytes(), str(cache)), [note]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_bytes(raw)
    tmp.replace(cache)
    return coins, []


def _reason(e: Exception) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return f"cannot fetch it ({e.reason})"
    if isinstance(e, TimeoutError):
        return "no answer within the timeout"
    return str(e).splitlines()[0]
