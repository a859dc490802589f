"""The single-skip-connection net: shapes in both modes, the cell majority vote, taps from config,
Inception-v3's geometry at 559 pixels, weights, and the engine hooks for box-wise models."""
from __future__ import annotations

import pytest
import torch
import torchvision

from skipseg.engine import evaluator
from skipseg.engine.evaluator import grid_targets
from skipseg.core.runtime import Runtime
from skipseg.errors import SkipsegError
from skipseg.inference.predictor import predict_probs
from skipseg.models import build_model, describe_model
from skipseg.models import init as model_init
from skipseg.models.cells import cell_index, centre_label, majority_vote
from skipseg.models.skipnet import resolve_tap
from skipseg.models.taps import default_weights

CPU = Runtime(torch.device("cpu"), None, False)
SMALL = dict(backbone="resnet18", head_channels=8)


@pytest.mark.parametrize("mode, tap", [("box", None), ("pixel", "2"), ("box", "2"), ("pixel", "layer3.1")])
def test_output_shapes_at_odd_sizes(mode, tap):
    model = build_model("skipnet", num_classes=5, tap=tap, kernel=5, grid=9, mode=mode, **SMALL).eval()
    x = torch.randn(2, 3, 67, 53)
    with torch.no_grad():
        out = model(x)
    assert out.shape == ((2, 5, 9, 9) if mode == "box" else (2, 5, 67, 53))
    assert model.output_grid == ((9, 9) if mode == "box" else None)
    maps = model.class_maps(x)
    assert maps["top"].shape[:2] == (2, 5) and ("tap" in maps) == (tap is not None)
    if tap == "2":  # resnet18's second found tap, layer1.0 at stride 4
        assert model.tap == "layer1.0" and maps["tap"].shape == (2, 5, 17, 14)


def test_cell_boundaries_round_i_times_h_over_g():
    assert cell_index(10, 4).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]  # 0-2, 3-4, 5-7, 8-9
    assert cell_index(12, 4).tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert cell_index(2, 3).tolist() == [0, 2]  # G > H: cell 1 holds no pixel


def test_majority_vote_by_hand():
    v = 255
    mask = torch.tensor([[
        # cells: rows 0-2 | 3-4, columns 0-2 | 3-4 (5 pixels, G = 2)
        [1, 1, 2, v, 3],
        [1, 1, 2, v, 3],
        [2, v, v, v, v],
        [5, v, 5, 2, 4],
        [v, 5, v, 2, 4],
    ]])
    target = majority_vote(mask, (2, 2), num_classes=6)
    # (0,0): four 1s, three 2s, two void -> 1; (0,1): 2 of class 3 and 4 void -> mostly void;
    # (1,0): 3 of class 5 and 3 void (half, not mostly) -> 5; (1,1): 2 vs 2 -> the lower class, 2.
    assert target.tolist() == [[[1, v], [5, 2]]]
    # labels outside [0, C) count as void; a cell with no pixel is void
    assert majority_vote(torch.full((1, 3, 3), 30), (1, 1), 21).tolist() == [[[v]]]
    assert majority_vote(torch.zeros(1, 2, 2, dtype=torch.long), (3, 3), 21)[0, 1].tolist() == [v, v, v]


def test_majority_vote_matches_a_loop_over_cells():
    torch.manual_seed(0)
    mask = torch.randint(0, 4, (3, 23, 17))
    mask[torch.rand(mask.shape) < 0.3] = 255
    grid, c = (5, 4), 4
    target = majority_vote(mask, grid, c)
    rows, cols = cell_index(23, grid[0]), cell_index(17, grid[1])
    for n in range(3):
        for i in range(grid[0]):
            for j in range(grid[1]):
                cell = mask[n][rows == i][:, cols == j].flatten()
                counts = torch.bincount(cell[cell < c], minlength=c)
                void = int((cell == 255).sum())
                expected = 255 if void > counts.sum() or counts.sum() == 0 else int(counts.argmax())
                assert int(target[n, i, j]) == expected


def test_centre_label_by_hand():
    """10 pixels, G = 4: cells 0-2, 3-4, 5-7, 8-9; their centres (i + ½)·10/4 fall in pixels 1, 3, 6, 8."""
    row = torch.tensor([2, 4, 2, 5, 1, 3, 255, 3, 6, 1])
    mask = row.view(1, 1, 10).expand(1, 10, 10).clone()  # every row the same
    target = centre_label(mask, (4, 4), num_classes=7)
    assert target[0, 0].tolist() == [4, 5, 255, 6]  # pixel 6 is void: so is its cell
    assert majority_vote(mask, (4, 4), num_classes=7)[0, 0].tolist() == [2, 1, 3, 1]  # another rule, other labels
    # G > H: 3 pixels in 5 cells (0 | - | 1 | - | 2): the empty cells are void
    assert centre_label(torch.tensor([[[1, 2, 3]]]), (1, 5), num_classes=4)[0, 0].tolist() == [1, 255, 2, 255, 3]


def test_head_options_reach_the_head_and_bad_values_name_the_key():
    torch.manual_seed(0)
    model = build_model("skipnet", num_classes=5, tap="1", grid=4, head_activation="none", score_init="normal",
                        cell_label="centre", score_upsampling="nearest", **SMALL)
    head = model.head
    assert isinstance(head.activation, torch.nn.Identity) and head.upsampling == "nearest"
    assert head.score_tap.weight.abs().sum() > 0 and head.score_top.weight.std() < 0.05  # small random init
    mask = torch.randint(0, 5, (2, 45, 61))
    assert torch.equal(model.target_from_mask(mask), centre_label(mask, (4, 4), 5))
    default = build_model("skipnet", num_classes=5, tap="1", grid=4, **SMALL).head
    assert isinstance(default.activation, torch.nn.ReLU) and default.score_tap.weight.abs().sum() == 0
    for key, value in (("head_activation", "tanh"), ("score_init", "ones"), ("cell_label", "mode"),
                       ("score_upsampling", "bicubic")):
        with pytest.raises(SkipsegError, match=f"model.{key}: '{value}'"):
            build_model("skipnet", num_classes=5, **{key: value}, **SMALL)


def test_inception_v3_geometry_at_559():
    info = describe_model("skipnet", size=(559, 559))
    names = [t["name"] for t in info["taps"]]
    assert names == ["Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5b", "Mixed_5d", "Mixed_6a", "Mixed_6e",
                     "Mixed_7b", "Mixed_7c"]
    assert [t["shape"][0] for t in info["taps"]] == [277, 136, 67, 67, 33, 33, 16, 16]
    assert [t["stride"] for t in info["taps"]] == [2, 4, 8, 8, 16, 16, 32, 32]
    assert info["output_shape"] == [21, 67, 67]
    assert default_weights("inception_v3") == "Inception_V3_Weights.IMAGENET1K_V1"


def test_taps_are_configuration():
    names = ["a", "b", "c"]
    assert resolve_tap(2, names) == ("2", "b") and resolve_tap("c", names) == ("3", "c")
    assert resolve_tap("none", names) == (None, None) and resolve_tap(None, names) == (None, None)
    assert resolve_tap("layer2.0", names) == ("layer2.0", "layer2.0")
    with pytest.raises(SkipsegError, match="1=a, 2=b, 3=c"):
        resolve_tap(4, names)
    with torch.device("meta"):
        model = build_model("skipnet", tap_names=["layer2.1", "layer3.0"], top="layer3.1", tap=1, **SMALL)
    assert model.tap == "layer2.1" and model.top == "layer3.1"
    assert [i.name for i in model.backbone.feature_info] == ["layer2.1", "layer3.0", "layer3.1"]
    with pytest.raises(SkipsegError, match="not a feature map of resnet18; candidates: relu, layer1.0"):
        build_model("skipnet", tap_names=["layer9"], **SMALL)


def test_option_errors():
    with pytest.raises(SkipsegError, match="only vgg16, vgg16_bn, inception_v3 can be narrowed, resnet18 needs width 1.0"):
        build_model("skipnet", width=0.5, **SMALL)
    with pytest.raises(SkipsegError, match="odd integer"):
        build_model("skipnet", kernel=4, **SMALL)
    with pytest.raises(SkipsegError, match="unknown torchvision classifier 'resnet7'"):
        build_model("skipnet", backbone="resnet7")


def test_inception_weights_file_with_aux_heads(tmp_path):
    """torchvision's Inception-v3 files hold AuxLogits.*; the aux-less backbone loads the rest exactly."""
    torch.manual_seed(1)
    reference = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    torch.save(reference.state_dict(), tmp_path / "inception.pth")
    model = build_model("skipnet", weights=str(tmp_path / "inception.pth"), tap=6, grid=5)
    got = model.backbone.body.state_dict()
    want = reference.state_dict()
    assert got.keys() <= want.keys() and "Mixed_7c.branch_pool.conv.weight" in got
    assert all(torch.equal(got[k], want[k]) for k in got)


def test_pretrained_offline_names_the_cache_file(hub):
    path = model_init.hub_cache_path(default_weights("resnet18"))
    with pytest.raises(SkipsegError, match="not cached") as error:
        build_model("skipnet", pretrained="imagenet", **SMALL)
    assert str(path) in str(error.value) and "weights=FILE" in str(error.value)


def test_frozen_backbone_stays_in_eval_mode():
    model = build_model("skipnet", tap=3, freeze_backbone=True, **SMALL).train()
    assert not model.backbone.training and model.head.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())


def test_box_models_are_scored_on_their_cells(monkeypatch):
    torch.manual_seed(0)
    model = build_model("skipnet", num_classes=3, tap=2, grid=4, **SMALL).eval()
    torch.nn.init.normal_(model.head.score_top.weight)  # not the zero init: predictions vary
    images = torch.randn(2, 3, 33, 45)
    with pytest.raises(SkipsegError, match="--flip: the 4 cells across a 34-pixel-wide image"):
        predict_probs(model, images, CPU, flip=True, scales=(0.75, 1.0))  # 45 x 0.75: a boundary at 8.5
    odd = build_model("skipnet", num_classes=3, tap=2, grid=5, **SMALL).eval()
    assert predict_probs(odd, images, CPU, flip=True, scales=(0.75, 1.0)).shape == (2, 3, 5, 5)
    probs = predict_probs(model, images, CPU)
    assert probs.shape == (2, 3, 4, 4)  # cells, not upsampled to the image
    masks = torch.randint(0, 3, (2, 33, 45))
    assert torch.equal(grid_targets(model)(masks), majority_vote(masks, (4, 4), 3))
    assert grid_targets(build_model("skipnet", mode="pixel", **SMALL)) is None

    monkeypatch.setattr(evaluator, "image_sizes", lambda dataset: [(33, 45)] * len(dataset))
    dataset = list(zip(images, masks))
    fn = lambda x, _: predict_probs(model, x, CPU)  # noqa: E731
    with pytest.raises(SkipsegError, match="target_from_mask"):
        evaluator.evaluate_dataset(dataset, fn, 3, CPU, workers=0, progress=False)
    scores = evaluator.evaluate_model(model, dataset, CPU, workers=0, progress=False)
    assert scores["num_images"] == 2
    expected = (probs.argmax(1) == majority_vote(masks, (4, 4), 3)).float().mean()
    assert scores["pixel_acc"] == pytest.approx(float(expected))
