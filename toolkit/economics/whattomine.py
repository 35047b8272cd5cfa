"""The WhatToMine JSON format and a card's mining revenue from it.

WhatToMine's coins.json (and files of the same shape) is `{"coins": {<name>: coin}}`; its
per-coin file is one coin object, with its `name` (docs/economics.md). The fields used here:

  tag            "ETC"
  algorithm      "Etchash" (the miners' names differ in case and punctuation: compared
                 lower-case, letters and digits only, after prices.yml's aliases)
  block_time     seconds, sent as a string ("13.1")
  block_reward   coins per block
  nethash        the network's hashrate, H/s
  exchange_rate  price of one coin in `exchange_rate_curr` (BTC; for Bitcoin itself the
                 number is its price in dollars)
  lagging        the site's own flag for data it has not refreshed: such coins are skipped

`estimated_rewards` and `btc_revenue` are computed by the site for the hashrate given in the
request's query string (its default card), not for ours, so they are not used.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, model_validator

SECONDS_PER_DAY = 86_400


def norm(name: str) -> str:
    """An algorithm or tag as compared: `KawPow`, `kawpow`, `Kaw-Pow` are one."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


class WtmCoin(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = ""
    tag: str
    algorithm: str
    block_time: float | None = None
    block_reward: float | None = None
    nethash: float | None = None
    exchange_rate: float | None = None
    exchange_rate_curr: str = "BTC"
    lagging: bool = False
    timestamp: int | None = None

    def missing(self) -> list[str]:
        """Fields the revenue formula needs that this coin lacks (or has at zero)."""
        return [
            f
            for f in ("block_time", "block_reward", "nethash", "exchange_rate")
            if not getattr(self, f)
        ]

    def coins_per_hs_day(self) -> float:
        """Coins one H/s earns in a day: its share of the network's blocks times the reward."""
        assert self.block_time and self.block_reward and self.nethash
        return SECONDS_PER_DAY / self.block_time * self.block_reward / self.nethash

    def value_per_hs_day(self, btc_price: float) -> float:
        """What one H/s earns in a day, in the prices file's currency, before the pool fee."""
        assert self.exchange_rate
        in_btc = 1.0 if norm(self.tag) == "btc" else self.exchange_rate
        return self.coins_per_hs_day() * in_btc * btc_price


class WtmFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    coins: dict[str, WtmCoin]

    @model_validator(mode="before")
    @classmethod
    def _one_coin_file(cls, data: object) -> object:
        # /coins/<id>.json: a single coin object rather than the `coins` mapping.
        if isinstance(data, dict) and "coins" not in data and "tag" in data:
            return {"coins": {str(data.get("name") or data["tag"]): data}}
        return data

    def btc_price(self) -> float | None:
        """Bitcoin's dollar price, when the file lists Bitcoin (WhatToMine's asic.json does)."""
        for c in self.coins.values():
            if norm(c.tag) == "btc" and c.exchange_rate and c.exchange_rate > 1:
                return c.exchange_rate
        return None

    def for_key(self, key: str, aliases: dict[str, str]) -> list[tuple[str, WtmCoin]]:
        """Coins a miner's hashrate key can mine: a coin tag (`ETC`) names that coin, an
        algorithm (`etchash`) every coin of that algorithm."""
        k = norm(aliases.get(norm(key), key))
        by_tag = [(n, c) for n, c in self.coins.items() if norm(c.tag) == k]
        return by_tag or [(n, c) for n, c in self.coins.items() if norm(c.algorithm) == k]
