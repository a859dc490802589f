"""The Markdown summary of a `bench.run` result: machine, targets (ratio, threshold, met or missed), figures."""
from __future__ import annotations

from typing import Any

from bench.common import fmt

STATUS = {True: "**met**", False: "**MISSED**", None: "n/a"}


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in cells) + " |"


def _table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    return [_row(columns), _row(["---"] * len(columns)), *(_row(r) for r in rows)]


def targets(result: dict) -> list[dict]:
    """Every figure that carries a target, in run order."""
    return [{"figure": f["name"], "value": f["value"], "unit": f["unit"], **f["target"]}
            for part in result["parts"].values() for f in part.get("figures", []) if "target" in f]


def machine_line(machine: dict) -> str:
    flags = ", ".join(k for k, v in machine["cpu_flags"].items() if v) or "none found"
    gpu = f"; GPU {machine['gpu']['name']}" if "gpu" in machine else ""
    return (f"{machine['cpu_model']}, {machine['cpu_count']} cores (flags: {flags}){gpu}; torch {machine['torch']}, "
            f"{machine['torch_threads']} threads; device {machine['device']}; load average at start "
            f"{', '.join(f'{x:.2f}' for x in machine['load_average'])}; git {machine['git_commit']}")


def markdown(result: dict) -> str:
    """The whole summary as Markdown text."""
    title = "# skipseg benchmarks" + (" (--quick: small sizes, for checking the code only)" if result["quick"] else "")
    lines = [title,
             "", f"`{result['command']}` — started {result['started']}, "
             f"{result.get('seconds', 0):.0f} s in all.", "", f"Machine: {machine_line(result['machine'])}.", ""]
    for when, check in (("start", result["machine"].get("contention")), ("end", result.get("contention_end"))):
        if check and check["contended"]:
            lines += [f"**Warning: the cores were contended at the {when}** (a small parallel op took "
                      f"{check['ratio']:.0f}x longer with {check['threads']} threads than with 1): other processes hold "
                      "them, OpenMP regions wait for descheduled threads, and multi-threaded figures here are not "
                      "this machine's. Rerun on quiet cores, or with `--threads 1`.", ""]
    if result.get("load_average_end"):
        lines += [f"Load average at the end: {', '.join(f'{x:.2f}' for x in result['load_average_end'])} "
                  "(other processes on the cores lower every figure).", ""]
    rows = [[t["text"], fmt(t["value"], t["unit"]), fmt(t["ratio"]), f"{t['comparison']} {t['threshold']:g}",
             STATUS[t["met"]]] for t in targets(result)]
    if rows:
        lines += ["## Targets (ratios measured in this run)", "",
                  *_table(["target", "measured", "ratio", "needed", "result"], rows), ""]
    for name, part in result["parts"].items():
        lines += [f"## {name} ({part.get('seconds', 0):.0f} s)", ""]
        if "error" in part:
            lines += [f"Failed: `{part['error']}`", ""]
            continue
        check = part.get("contention")
        if check and check["contended"]:
            lines += [f"**Contended cores before this part** (small parallel op {check['ratio']:.0f}x slower on "
                      f"{check['threads']} threads than on 1): its multi-threaded figures are low.", ""]
        if part.get("note"):
            lines += [f"Note: {part['note']}", ""]
        if "table" in part:
            lines += [*_table(part["table"]["columns"], part["table"]["rows"]), ""]
            figures = [f for f in part["figures"] if "target" in f]
        else:
            figures = part["figures"]
        if figures:
            lines += [*_table(["figure", "value", "how measured", "target"], [
                [f["name"], fmt(f["value"], f["unit"]), f["how"],
                 f"{fmt(f['target']['ratio'])} {f['target']['comparison']} {f['target']['threshold']:g}: "
                 f"{STATUS[f['target']['met']]}" if "target" in f else ""] for f in figures]), ""]
        for f in part["figures"]:
            if f.get("note"):
                lines += [f"Note ({f['name']}): {f['note']}", ""]
    return "\n".join(lines).rstrip() + "\n"
