"""Economics: per rig, does mining or serving AI pay more, and when is a switch worth it.

- `prices`: the operator's prices.yml (power, the WhatToMine-format source, AI rental prices,
  switching costs, decision settings) and the WhatToMine JSON, from a file or a cached URL;
- `whattomine`: the WhatToMine JSON and a card's mining revenue from it;
- `inputs`: what advise knows about each rig and card (preflight plus measured figures);
- `engine`: per-card and per-rig figures, outlier screening, switching cost and the decision;
- `history`: what earlier runs saw, so the minimum stay and the outlier screen hold across runs;
- `cli`: the `advise` verb.

Formulas, defaults and their sources: docs/economics.md.
"""
