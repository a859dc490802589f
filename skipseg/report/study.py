"""The skip study's report of a finished sweep: `collect` merges the run folders of one or more
sweep folders (shards of the same sweep) into Tables 1-3 and a score-map figure per connection."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from skipseg.core.rundir import SweepDir
from skipseg.engine.sweep import read_plan, records
from skipseg.errors import SkipsegError
from skipseg.models.registry import resolved_options
from skipseg.report.overlap import scored_on_model, split_ids
from skipseg.report.score_maps import sweep_score_maps
from skipseg.report.tables import write_tables


def collect(dirs: Sequence[str | Path], out: str | Path | None = None, score_maps: bool = True) -> dict:
    """Merge the finished runs of `dirs` (sweep folders of the same sweep) into `out` (default the
    first folder's `report/`). Returns `{"report", "tables", "score_maps", "mode", "found", "missing"}`."""
    dirs = [Path(d) for d in dirs]
    config, plan = read_plan(dirs[0])
    for other in dirs[1:]:
        if read_plan(other)[1] != plan:
            raise SkipsegError(f"{other}: holds another sweep than {dirs[0]} (plan.json differs)")
    mode = config.sweep.mode
    found, missing = records(dirs, plan, mode)
    report = Path(out) if out else SweepDir(dirs[0]).report
    labels = list(dict.fromkeys(r.label for r in plan))
    options = resolved_options(config.model)
    method = f"skipnet on {options['backbone']} ({options['mode']}-wise, {mode} runs)"
    note = (f"{len(found)} of {len(plan)} configurations found"
            + (f"; missing: {', '.join(missing)}" if missing else "") + f". Sweep folders: {', '.join(map(str, dirs))}.")
    compare = [(c.name, c.run) for c in config.sweep.compare]
    data = config.data
    eval_ids = split_ids(data.val_root or data.root, data.val_split, data.sbd_root)
    train_ids = split_ids(data.root, data.train_split, data.sbd_root)
    tables = write_tables(found, labels, config.sweep.kernels, method, compare, report, note, eval_ids,
                          scored_on_model(config.model), config.sweep.published, train_ids)
    maps = sweep_score_maps(config, found, dirs, mode, report / "score_maps") if score_maps and found else []
    summary = {"found": [r["name"] for r in found], "missing": missing, **_train_seconds(dirs, plan, mode)}
    (report / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {"report": report, "tables": tables, "score_maps": maps, "mode": mode, **summary}


def _train_seconds(dirs: Sequence[Path], plan, mode: str) -> dict[str, float]:
    """Total training wall and CPU time of the runs found (what probe mode is measured against)."""
    names = ["probe"] if mode == "probe" else [r.name for r in plan]
    total = {"train_seconds": 0.0, "train_cpu_seconds": 0.0}
    for name in names:
        for folder in dirs:
            path = SweepDir(folder).run(name).scores
            if path.is_file():
                metrics = json.loads(path.read_text())
                for key in total:
                    total[key] += metrics.get(key) or 0.0
                break
    return total
