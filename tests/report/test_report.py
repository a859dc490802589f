"""`skipseg report`: runs, evaluations and sweeps → one self-contained report.html + report.md."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skipseg.cli import main
from skipseg.errors import SkipsegError
from skipseg.report import headline_table, write_report
from skipseg.report.collect import gather, inference_suffix, kind_of
from skipseg.report.figures import row_normalised
from skipseg.report.html import _best_cells

TINY = ["model.width=0.0625", "data.crop_size=32", "data.workers=0", "train.batch_size=2",
        "train.iterations=3", "train.val_every=3", "train.log_every=1", "train.precision=fp32"]
QUIET = ["--no-progress", "--workers", "0"]
HEADER_BG = (232, 236, 241)  # th background in html.CSS: the screenshot finds tables by it


def sweep_config(folder: Path, data: Path, mode: str, taps: str) -> Path:
    path = folder / f"sweep_{mode}.yaml"
    path.write_text(
        "model: {name: skipnet, backbone: resnet18, head_channels: 8, grid: 5}\n"
        f"data: {{root: {data}, crop_size: 41, workers: 0}}\n"
        "train: {batch_size: 2, iterations: 2, val_every: 2, log_every: 1, precision: fp32, channels_last: false}\n"
        f"sweep: {{mode: {mode}, taps: {taps}, kernels: [3], score_map_count: 1}}\n")
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shapes_root) -> dict[str, Path]:
    """Two tiny FCN runs (one evaluated in RUN/eval), an ensemble evaluated proposal-wise with CRF,
    a one-run separate sweep and a two-head probe sweep."""
    root = tmp_path_factory.mktemp("report_inputs")
    config = root / "tiny.yaml"
    config.write_text(f"model:\n  name: fcn16s\ndata:\n  root: {shapes_root}\n")
    fcn16, fcn32 = root / "fcn16s", root / "fcn32s"
    assert main(["train", str(config), *TINY, "--out", str(fcn16), "--no-progress"]) == 0
    assert main(["train", str(config), *TINY, "model.name=fcn32s", "--out", str(fcn32), "--no-progress"]) == 0
    assert main(["evaluate", str(fcn16), "--out", str(fcn16 / "eval"), *QUIET]) == 0
    ens = root / "ens"
    assert main(["evaluate", str(fcn16), str(fcn32 / "checkpoints" / "last.pt"), "--proposals", "3",
                 "--proposal-runs", "1", "--crf", "--crf-params", "iterations=1", "--out", str(ens), *QUIET]) == 0
    separate, probe = root / "sweep_separate", root / "sweep_probe"
    assert main(["sweep", str(sweep_config(root, shapes_root, "separate", "[none]")), "--out", str(separate),
                 "--no-progress"]) == 0
    assert main(["sweep", str(sweep_config(root, shapes_root, "probe", "[none, 2]")), "--out", str(probe),
                 "--no-progress", "--no-report"]) == 0
    return {"fcn16": fcn16, "fcn32": fcn32, "ens": ens, "separate": separate, "probe": probe, "root": root}


@pytest.fixture(scope="module")
def report(inputs) -> Path:
    out = inputs["root"] / "report"
    order = [inputs[k] for k in ("fcn16", "fcn32", "ens", "separate", "probe")]
    assert main(["report", *map(str, order), "--out", str(out), "--samples", "2"]) == 0
    return out


def embedded_pngs(page: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(data)))
            for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_html_is_self_contained_with_tables_and_figures(report):
    page = (report / "report.html").read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == page.count("<img ") and all(s.startswith("data:image/png;base64,") for s in sources)
    images = embedded_pngs(page)
    # curves, confusion matrix, samples, score maps: 1 (separate sweep) + 2 (probe sweep: both heads)
    assert len(images) == 6 and all(im.format == "PNG" and min(im.size) > 50 for im in images)
    for text in ("fcn16s", "fcn32s (last validation, iteration 3)", "fcn16s+fcn32s:last (proposals 3, max, CRF)",
                 "skipnet resnet18: no connection", "Table 1. mIoU", "Table 2. mIoU",
                 "Table 2b. Validation cross-entropy", "Table 3. Comparison",
                 "IoU (%) per class", "Training curves", "Confusion matrix of the best system", "Sample predictions"):
        assert text in page, text
    assert page.count("<table>") == 2 + 2 * 4  # comparison, per class, Tables 1, 2, 2b, 3 of each sweep


def test_markdown_holds_every_table_in_input_order(report):
    text = (report / "report.md").read_text()
    rows = [line.split("|")[1].strip() for line in text.splitlines()
            if line.startswith("| ") and ("fcn" in line or "skipnet resnet18" in line)][:5]
    assert rows[:4] == ["fcn16s", "fcn32s (last validation, iteration 3)",
                        "fcn16s+fcn32s:last (proposals 3, max, CRF)", "skipnet resnet18: no connection"]
    assert rows[4].startswith("skipnet resnet18: ")  # the probe sweep's best head
    assert text.count("| Connection") == 6 and text.count("| Method") == 2 and "| Class" in text  # 1, 2, 2b per sweep
    assert "| background" in text
    assert (report / "sweeps" / "2_sweep_probe" / "score_maps").is_dir()  # rendered: the probe sweep had none


def test_headline_table_prefers_an_evaluation_of_the_run(inputs, tmp_path):
    alone = tmp_path / "fcn32s_eval"
    assert main(["evaluate", str(inputs["fcn32"]), "--out", str(alone), *QUIET]) == 0
    table = headline_table([inputs["fcn32"], alone]).splitlines()
    assert table[0].startswith("| System") and table[0].split("|")[2].strip() == "mIoU"
    assert len(table) == 3 and table[2].startswith("| fcn32s ") and "last validation" not in table[2]
    scores = json.loads((alone / "metrics.json").read_text())
    assert f"{100 * scores['mean_iou']:.2f}" in table[2]
    # RUN/eval holding an ensemble is labelled by its runs
    run = shutil.copytree(inputs["fcn32"], tmp_path / "fcn32s")
    assert main(["evaluate", str(run), str(inputs["fcn16"]), "--flip", "--out", str(run / "eval"), *QUIET]) == 0
    assert headline_table([run]).splitlines()[2].startswith("| fcn32s+fcn16s (flip) ")


def test_staged_run_is_its_final_stage_with_every_stage_curve(inputs, tmp_path):
    staged = tmp_path / "fcn"
    shutil.copytree(inputs["fcn32"], staged / "s32")
    shutil.copytree(inputs["fcn16"], staged / "s16")  # with its eval/: the final stage's evaluation
    (staged / "stages.json").write_text(json.dumps({"stages": ["s32", "s16"], "final": "s16",
                                                    "completed": ["s32", "s16"]}))
    found = gather([staged])
    assert [s.label for s in found.systems] == ["fcn"] and [r.name for r in found.runs] == ["fcn/s32", "fcn/s16"]
    page = write_report([staged], tmp_path / "r", samples=1).read_text()
    assert len(embedded_pngs(page)) == 3 and "Sample predictions" in page  # curves, confusion, samples


def test_python_api_without_samples(inputs, tmp_path):
    page = write_report([inputs["fcn16"]], tmp_path / "r", samples=0)
    assert page == tmp_path / "r" / "report.html" and len(embedded_pngs(page.read_text())) == 2


def test_bad_inputs_are_one_line_errors(tmp_path, inputs, capsys):
    empty, foreign, broken = tmp_path / "empty", tmp_path / "foreign", tmp_path / "broken"
    empty.mkdir()
    foreign.mkdir()
    (foreign / "metrics.json").write_text(json.dumps({"mean_iou": 0.5}))
    broken.mkdir()
    (broken / "metrics.json").write_text("{not json")
    cases = [(tmp_path / "nope", "no such file or folder"), (empty, "not a training run (config.yaml + metrics.csv)"),
             (foreign, 'has no "runs"'), (broken, "not a readable JSON file")]
    for path, message in cases:
        assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and str(path) in err and message in err, err
    assert main(["report", str(inputs["fcn16"]), "--out", str(tmp_path / "o"), "--samples", "-1"]) == 2
    assert "--samples -1" in capsys.readouterr().err


def test_detection_and_small_helpers(inputs):
    assert kind_of(inputs["fcn16"]) == "run" and kind_of(inputs["ens"]) == "evaluation"
    assert kind_of(inputs["ens"] / "metrics.json") == "evaluation" and kind_of(inputs["probe"]) == "sweep"
    with pytest.raises(SkipsegError, match="give a folder"):
        kind_of(inputs["fcn16"] / "metrics.csv")
    assert inference_suffix({"proposals": 50, "aggregate": "max", "crf": True}) == " (proposals 50, max, CRF)"
    assert inference_suffix({"flip": True, "scales": [0.75, 1.0]}) == " (flip, scales 0.75,1)"
    assert inference_suffix({"flip": False, "scales": [1.0], "proposals": 0, "crf": False}) == ""
    np.testing.assert_allclose(row_normalised([[3, 1], [0, 0]]), [[0.75, 0.25], [0.0, 0.0]])
    rows = [["a", "1.00", "5.00", "7"], ["b", "2.00", "5.00", "9"]]
    assert _best_cells(rows, "column", plain=(3,)) == {(1, 1)}  # equal column: no best; counts: never
    assert _best_cells(rows, "row") == {(0, 3), (1, 3)}


def _screenshot(html: Path, png: Path) -> np.ndarray:
    subprocess.run([shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={png}", "--window-size=1280,7000", html.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(png).convert("RGB")).astype(np.int16)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium not on PATH (Debian's `chromium`; .ci/run installs it on CI)")
def test_chromium_shows_tables_and_images(report, tmp_path):
    pixels = _screenshot(report / "report.html", tmp_path / "page.png")
    header = (np.abs(pixels - np.array(HEADER_BG)).max(axis=-1) <= 3).sum()
    coloured = (pixels.max(axis=-1) - pixels.min(axis=-1) > 60).sum()
    non_white = (pixels.min(axis=-1) < 235).mean()
    # Control: the same page with every image left out shows the tables but no colour.
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r'<img [^>]*>', "", (report / "report.html").read_text()))
    control = _screenshot(bare, tmp_path / "bare.png")
    control_coloured = (control.max(axis=-1) - control.min(axis=-1) > 60).sum()
    assert header > 2000, f"table headers: {header} px"
    assert coloured > 50_000 and control_coloured < coloured / 50, (coloured, control_coloured)
    assert non_white > 0.1, non_white


def test_report_tables_carry_the_figures_of_metrics_json(report, inputs):
    """The headline row and the per-class row of an evaluated run are its metrics.json, to the digit."""
    text = (report / "report.md").read_text()
    scores = json.loads((inputs["fcn16"] / "eval" / "metrics.json").read_text())
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ")}
    headline = rows["fcn16s"]
    assert f"{100 * scores['mean_iou']:.2f}" == headline[0]
    assert f"{100 * scores['pixel_acc']:.2f}" in headline and f"{100 * scores['mean_acc']:.2f}" in headline
    per_class = [line for line in text.splitlines() if line.startswith("| background")][0]
    cells = [c.strip() for c in per_class.split("|")[2:-1]]
    assert f"{100 * scores['per_class_iou'][0]:.2f}" == cells[0]  # fcn16s is the first system column


def test_curves_give_a_probe_loss_per_head_and_a_lone_validation_its_value(inputs):
    from skipseg.engine.logbook import read_metrics
    from skipseg.report.figures import curve_points

    found = gather([inputs["probe"], inputs["fcn32"]])
    probe = next(r for r in found.runs if "probe" in r.name)
    assert "loss per head, mean of 2" in probe.name and probe.loss_scale == 0.5
    logged = [(r["iteration"], r["loss"]) for r in read_metrics(probe.folder) if r["split"] == "train"]
    train, _ = curve_points(probe)
    assert train == [(i, loss / 2) for i, loss in logged]  # on the same axis as one model's loss
    single = next(r for r in found.runs if r.name == "fcn32s")
    _, val = curve_points(single)
    assert len(val) == 1  # validated once: drawn as a point labelled with its value
    assert curve_points(single)[0] and single.loss_scale == 1.0
