"""Write a rendered toy domain to disk: PNG images plus a factors CSV (a labelled training set)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from noiseclr_lab.toyworld.domains import NUISANCE_KEY, get_domain

FACTORS_CSV = "factors.csv"


def render_folder(domain: str, n: int, out: str | os.PathLike, seed: int = 0) -> Path:
    """Render ``n`` images of ``domain`` into ``out`` as ``00000.png ...`` and write ``factors.csv``.

    Returns the CSV path. Same (domain, n, seed) -> same files.
    """
    dom = get_domain(domain)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = dom.sample(np.random.default_rng(seed), n)
    names = [f.name for f in dom.factors]
    rows = []
    chunk = 256
    with tqdm(total=n, desc=f"render {domain}", unit="img") as bar:
        for start in range(0, n, chunk):
            part = records[start : start + chunk]
            for i, (rec, img) in enumerate(zip(part, dom.render(part))):
                fname = f"{start + i:05d}.png"
                img.save(out / fname)
                rows.append([fname] + [rec[k] for k in names] + [rec[NUISANCE_KEY], dom.caption(rec)])
            bar.update(len(part))
    path = out / FACTORS_CSV
    tmp = out / f".{FACTORS_CSV}.tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file"] + names + [NUISANCE_KEY, "caption"])
        w.writerows(rows)
    os.replace(tmp, path)
    return path
