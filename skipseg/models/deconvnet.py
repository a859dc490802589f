"""DeconvNet (Noh, Hong, Han 2015), exactly the network of the paper's Table 2.

Encoder: VGG16's 13 convolutions, each conv → batch norm → ReLU, 2×2/2 max pooling that records its
switches, fc6 as a 7×7 unpadded convolution (7×7×512 → 1×1×4096) and fc7 (1×1×4096), each followed
by batch norm and ReLU (no dropout: the paper removed it). Decoder, the mirror image: deconv-fc6
(7×7 transposed conv, 1×1 → 7×7×512), then unpool5 … unpool1, each using its pooling's switches and
followed by the 3×3 deconvolutions of Table 2 (deconv → BN → ReLU), and a 1×1 scoring conv → C.
Table 2 lists the output layer with "pad 1", a typo: a padded 1×1 conv would give 226×226.

The input is 224×224 (`input_size`); `predict_probs` and the proposal inference resize to it.
For CPU-sized training `input_size` may be any multiple of 32 (e.g. 64 or 96): fc6's kernel is then
input/32 (7 at 224, the paper's) and deconv-fc6 mirrors it, every other layer is unchanged.
Batch norm after fc6/fc7 normalises 1×1 maps over the batch, so training needs batches of >= 2.
At width 1.0 with 21 classes the model has 251,805,653 parameters (the paper: "approximately 252M").

Layer names: the encoder keeps torchvision's `vgg16_bn` keys (`backbone.features.N`). The paper
starts from ImageNet's VGG16, which has no batch norm: `pretrained: imagenet` loads VGG16's
convolutions into theirs and every batch norm starts as the identity; `pretrained: imagenet_bn`
loads torchvision's VGG16-BN as it is. Either way fc6/fc7 are reshaped from torchvision's Linear
layers ("surgery"), and the BN after fc6/fc7 has no ImageNet counterpart (identity at the start).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import torch
from torch import Tensor, nn
from torchvision.models.vgg import make_layers

from skipseg.errors import SkipsegError
from skipseg.models.backbones import VGG16_CFG, StagedBackbone, scaled
from skipseg.models.init import initialize
from skipseg.models.options import Multiplier, OneOf
from skipseg.models.registry import register_model
from skipseg.models.unpool import SwitchPool, Unpool

INPUT_SIZE = 224  # the paper's; fc6's kernel is INPUT_SIZE / 32 = 7
DecoderInit = Annotated[str, OneOf(("gaussian", "mirror"))]

# The decoder of Table 2: (unpool, switches of, [(deconv, in channels, out channels), ...]).
DECODER = (
    ("unpool5", "pool5", (("deconv5_1", 512, 512), ("deconv5_2", 512, 512), ("deconv5_3", 512, 512))),
    ("unpool4", "pool4", (("deconv4_1", 512, 512), ("deconv4_2", 512, 512), ("deconv4_3", 512, 256))),
    ("unpool3", "pool3", (("deconv3_1", 256, 256), ("deconv3_2", 256, 256), ("deconv3_3", 256, 128))),
    ("unpool2", "pool2", (("deconv2_1", 128, 128), ("deconv2_2", 128, 64))),
    ("unpool1", "pool1", (("deconv1_1", 64, 64), ("deconv1_2", 64, 64))),
)

class DeconvNetBackbone(StagedBackbone):
    """The encoder: torchvision `vgg16_bn` features with switch-recording pools, fc6/fc7 + BN + ReLU.

    Taps pool1..pool5 (strides 2..32), fc7 (1×1 at `input_size`, whose pool5 map fc6's kernel
    covers) and each pooling's switches, `poolK_switches` (int64: where each maximum came from, on
    the pool's output grid), which the decoder's unpooling reads.
    """

    # `pretrained: imagenet` (the paper): VGG16's convolutions, each followed by a batch norm that
    # starts as the identity; `pretrained: imagenet_bn`: torchvision's VGG16-BN, batch norms included.
    paper_weights = "VGG16_Weights.IMAGENET1K_V1"
    torchvision_weights = "VGG16_BN_Weights.IMAGENET1K_V1"
    torchvision_arch = "vgg16_bn"
    torchvision_fc = {"fc6": ("classifier.0", 7), "fc7": ("classifier.3", 1)}
    torchvision_ignore = ("classifier.6.",)
    torchvision_extra = ("bn6.", "bn7.")  # the batch norms after fc6/fc7: none in VGG16-BN's classifier

    def __init__(self, width: float = 1.0, input_size: int = INPUT_SIZE) -> None:
        super().__init__()
        cfg = [v if v == "M" else scaled(v, width) for v in VGG16_CFG]
        self.features = make_layers(cfg, batch_norm=True)
        c5, cfc = scaled(512, width), scaled(4096, width)
        kernel = check_input_size(input_size) // 32
        self.fc6, self.bn6, self.relu6 = nn.Conv2d(c5, cfc, kernel), nn.BatchNorm2d(cfc), nn.ReLU(inplace=True)
        self.fc7, self.bn7, self.relu7 = nn.Conv2d(cfc, cfc, 1), nn.BatchNorm2d(cfc), nn.ReLU(inplace=True)
        stages, start, channels = [], 0, 3
        for i, layer in enumerate(self.features):
            if isinstance(layer, nn.Conv2d):
                channels = layer.out_channels
            elif isinstance(layer, nn.MaxPool2d):
                self.features[i] = SwitchPool(2)
                stages.append((f"pool{len(stages) + 1}", channels, self.features[start : i + 1]))
                start = i + 1
        stages.append(("fc7", cfc, [self.fc6, self.bn6, self.relu6, self.fc7, self.bn7, self.relu7]))
        self._set_stages(stages)
        # each pool's switches right after it, on its grid
        self.feature_info = [tap for info in self.feature_info for tap in
                             ([info, replace(info, name=f"{info.name}_switches")] if info.name.startswith("pool") else [info])]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        self.check_input(x)
        taps: dict[str, Tensor] = {}
        for name, layers in self._stages:
            switches = None
            for layer in layers:
                if isinstance(layer, SwitchPool):
                    x, switches = layer(x)  # [N, C, H/2, W/2], and where each maximum came from
                else:
                    x = layer(x)
            taps[name] = x
            if switches is not None:
                taps[f"{name}_switches"] = switches
        return taps


def check_input_size(size: int) -> int:
    """`size` if it is a positive multiple of 32 (five 2×2 pools, then fc6 covers pool5's map)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 32 or size % 32:
        raise SkipsegError(f"deconvnet: input_size must be a multiple of 32 (fc6's kernel is input_size/32; "
                           f"the paper: 224), got {size!r}")
    return size


def _deconv(cin: int, cout: int, kernel: int, padding: int) -> nn.Sequential:
    """deconv → BN → ReLU; index 0 is the transposed convolution itself."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, kernel, padding=padding), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DeconvNetDecoder(nn.Module):
    """The decoder of Table 2: deconv-fc6, then each unpooling (from its pool's switches) and its
    deconvolutions, then the 1×1 scoring conv; `forward(taps) -> [N, num_classes, S, S]`.

    `decoder_width` scales the decoder's own channels (default: `width`, the encoder's). An unpooling
    places its pool's channels, so the deconvolution that feeds one keeps the pool's channel count and
    the one after it reads that count; every other deconvolution, deconv1-1 and deconv1-2 before the
    scoring conv included, has Table 2's width times `decoder_width`."""

    def __init__(self, num_classes: int, width: float, kernel: int, decoder_width: float | None = None) -> None:
        super().__init__()
        own = width if decoder_width is None else decoder_width
        self.deconv_fc6 = _deconv(scaled(4096, width), scaled(512, width), kernel, 0)  # mirrors fc6
        feeds_unpool = {deconvs[-1][0] for _, _, deconvs in DECODER[:-1]}
        channels = scaled(512, width)
        for unpool, _, deconvs in DECODER:
            setattr(self, unpool, Unpool(2))
            for name, _, cout in deconvs:
                out = scaled(cout, width if name in feeds_unpool else own)
                setattr(self, name, _deconv(channels, out, 3, 1))
                channels = out
        self.score = nn.Conv2d(channels, num_classes, 1)

    def forward(self, taps: dict[str, Tensor]) -> Tensor:
        y = self.deconv_fc6(taps["fc7"])  # [N, 512w, S/32, S/32] (7×7 at S = 224)
        for unpool, pool, deconvs in DECODER:
            switches = taps[f"{pool}_switches"]  # the input is a multiple of 32: every pool halves exactly
            y = getattr(self, unpool)(y, switches, (2 * switches.shape[-2], 2 * switches.shape[-1]))  # sparse
            for name, _, _ in deconvs:
                y = getattr(self, name)(y)  # [N, C', 2h, 2w], dense
        return self.score(y)  # [N, num_classes, S, S]


class DeconvNet(nn.Module):
    """Encoder (`backbone`, named taps, switches included) + the mirrored decoder of Table 2."""

    # The paper's fully connected layers as convolutions; the runtime computes them as matmuls on
    # small CPU maps (`core.fc_matmul`).
    fully_connected = ("backbone.fc6", "decoder.deconv_fc6.0")

    def __init__(self, num_classes: int = 21, width: float = 1.0, input_size: int = INPUT_SIZE,
                 decoder_width: float | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.input_size = (input_size, input_size)  # what the predictor resizes images and crops to
        self.backbone = DeconvNetBackbone(width, input_size)
        self.decoder = DeconvNetDecoder(num_classes, width, input_size // 32, decoder_width)
        self._init_weights()

    def _init_weights(self) -> None:
        # Zero-mean Gaussians (He): conv fan_out as torchvision's VGG; for a stride-1 transposed conv
        # torch's "fan_out" of its [in, out, k, k] weight is in*k*k, the fan-in each output sees.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # The scoring conv (no batch norm after it): std 1/sqrt(fan-in), so that the initial logits
        # spread about as much as its inputs. A small fixed std (0.01) starts the logits near zero,
        # and at width 1/8 (8 input channels) Adam, moving each weight by about the lr per step,
        # then needs hundreds of steps just to scale them up.
        nn.init.normal_(self.decoder.score.weight, std=self.decoder.score.in_channels ** -0.5)

    def mirrored_layers(self) -> list[tuple[nn.ConvTranspose2d, nn.Conv2d]]:
        """(deconvolution, the encoder layer it mirrors) for every decoder layer whose weight has its
        mirror's shape: deconv-fc6 ↔ fc6, deconv5-1 ↔ conv5-3, …, deconv1-1 ↔ conv1-2 (deconv1-2
        mirrors conv1-1, whose 3 input channels it does not output)."""
        convs = [layer for name, layer in self.layers() if name.startswith("conv")]
        deconvs = [layer for name, layer in self.layers() if name.startswith("deconv") and name != "deconv-fc6"]
        pairs = [(self.decoder.deconv_fc6[0], self.backbone.fc6), *zip(deconvs, reversed(convs))]
        return [(d, c) for d, c in pairs if d.weight.shape == c.weight.shape]

    def mirror_decoder(self) -> None:
        """Start each deconvolution as the transpose of its mirrored encoder layer (Zeiler & Fergus's
        deconvnet: a conv's weight read by a transposed conv is its adjoint), so the decoder begins by
        projecting fc7's code back to the input through the encoder's own filters and switches."""
        with torch.no_grad():
            for deconv, conv in self.mirrored_layers():
                deconv.weight.copy_(conv.weight)

    def check_input(self, x: Tensor) -> None:
        h, w = (int(s) for s in x.shape[-2:])
        if (h, w) != self.input_size:
            size = "x".join(map(str, self.input_size))
            raise SkipsegError(
                f"deconvnet: input of {h}x{w} pixels; the network takes exactly {size} (model.input_size; "
                "resize the image or proposal crop to it, as the predictor does)"
            )
        if self.training and x.shape[0] < 2:
            raise SkipsegError(
                "deconvnet: training needs batches of at least 2 images (batch norm after fc6/fc7 "
                "normalises 1x1 maps over the batch)"
            )

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self.decoder(self.backbone(x))  # [N, 3, S, S] → taps → [N, num_classes, S, S]

    def layers(self) -> list[tuple[str, nn.Module]]:
        """Every layer of Table 2, in its order and with its name, paired with the module whose
        output is that layer's output (convolutions before their BN; pools give (values, switches))."""
        out: list[tuple[str, nn.Module]] = []
        block, index = 1, 1
        for layer in self.backbone.features:
            if isinstance(layer, nn.Conv2d):
                out.append((f"conv{block}-{index}", layer))
                index += 1
            elif isinstance(layer, SwitchPool):
                out.append((f"pool{block}", layer))
                block, index = block + 1, 1
        decoder = self.decoder
        out += [("fc6", self.backbone.fc6), ("fc7", self.backbone.fc7), ("deconv-fc6", decoder.deconv_fc6[0])]
        for unpool, _, deconvs in DECODER:
            out.append((unpool, getattr(decoder, unpool)))
            out += [(name.replace("_", "-"), getattr(decoder, name)[0]) for name, _, _ in deconvs]
        out.append(("output", decoder.score))
        return out


@register_model("deconvnet", "DeconvNet (Noh et al. 2015): VGG16-BN encoder, unpooling/deconvolution decoder, 224x224")
def deconvnet(num_classes: int = 21, width: float = 1.0, pretrained: str | None = None, weights: str | None = None,
              init_from: str | None = None, input_size: Annotated[int, check_input_size] = INPUT_SIZE,
              decoder_width: Multiplier | None = None, decoder_init: DecoderInit = "gaussian") -> DeconvNet:
    """`pretrained: imagenet` (the paper: VGG16's convolutions and fc6/fc7, every batch norm starting
    as the identity), `imagenet_bn` (torchvision's VGG16-BN, its batch norms too), `shapes` (the
    shipped VGG16-BN) or `weights: FILE` (a vgg16_bn-format file); the decoder and the fc batch norms
    keep their initial values either way; `init_from`: a
    trained model. `input_size`: the square input, a multiple of 32 (fc6 is input_size/32 wide; below
    224 the classifier's 7x7 average pooling is folded into fc6, see `init.fc_to_conv`).
    `decoder_width`: the decoder's own channel multiplier (default: `width`; see `DeconvNetDecoder`).
    `decoder_init`: gaussian (zero-mean Gaussians, as the paper), or mirror (each deconvolution starts as
    the transpose of its mirrored encoder layer once the encoder is initialised; `mirror_decoder`)."""
    model = DeconvNet(num_classes, width, input_size, decoder_width)  # input_size checked by its annotation (and DeconvNet)
    initialize(model, width=width, pretrained=pretrained, weights=weights, init_from=init_from)
    if decoder_init == "mirror" and init_from is None:  # from a trained model, its decoder is kept
        model.mirror_decoder()
    return model
