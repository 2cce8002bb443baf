"""Train edgeinfer's bundled example model: a small CNN on scikit-learn's 8x8 digits.

Pure numpy (im2col convolutions, hand-written backward pass, Adam), deterministic for a given
seed, a few seconds on one core. Writes, next to the package code:

* ``edgeinfer/examples/digits_cnn.onnx`` - opset 17, input ``image`` float32 ``[N,1,8,8]``
  (``N`` symbolic), output ``logits`` float32 ``[N,10]``;
* ``edgeinfer/examples/digits_test.npz`` - the held-out test set: ``images`` float32
  ``[450,1,8,8]`` and ``labels`` int64 ``[450]``.

Pixel scaling: the model's input is ``load_digits().images / 16.0`` (pixels in [0, 1]).

Network::

    image [N,1,8,8]
      -> Conv 3x3, 1->8, pad 1 (no bias) -> BatchNormalization -> Relu     [N,8,8,8]
      -> Conv 3x3, 8->16, stride 2, pad 1 -> Relu                          [N,16,4,4]
      -> Flatten -> Gemm 256->10                                            logits [N,10]

The BatchNormalization is kept in the exported model on purpose: it exercises the Conv+BN
folding of edgeinfer's cpu backend.

Reproduce::

    pip install -e ".[dev]"
    python examples/train_digits.py            # --seed 0 --epochs 20 are the defaults
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

SEED = 0
N_TEST = 450
BN_EPS = 1e-5
BN_MOMENTUM = 0.9  # running = momentum * running + (1 - momentum) * batch (ONNX convention)
OUT_DIR = Path(__file__).resolve().parents[1] / "edgeinfer" / "examples"
REPRODUCE = "pip install -e '.[dev]' && python examples/train_digits.py --seed {seed} --epochs {epochs}"


# ------------------------------------------------------------------------------ data
def load_split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits as float32 [N,1,8,8] in [0,1] plus int64 labels, split by a seeded permutation."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    test, train = order[:N_TEST], order[N_TEST:]
    return x[train], y[train], x[test], y[test]


# ----------------------------------------------------------------- conv via im2col
def im2col(x: np.ndarray, k: int, stride: int, pad: int) -> tuple[np.ndarray, tuple[int, int]]:
    """[N,C,H,W] -> [N*Ho*Wo, C*k*k] patches (row order n, ho, wo; column order c, i, j)."""
    n, c, h, w = x.shape
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((n, c, k, k, ho, wo), dtype=x.dtype)
    for i in range(k):  # k*k whole-array copies, no per-pixel Python
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * ho * wo, c * k * k), (ho, wo)


def col2im(dcols: np.ndarray, x_shape: tuple, k: int, stride: int, pad: int, out_hw: tuple[int, int]) -> np.ndarray:
    """Adjoint of :func:`im2col`: scatter-add patch gradients back onto the input."""
    n, c, h, w = x_shape
    ho, wo = out_hw
    d = dcols.reshape(n, ho, wo, c, k, k).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=dcols.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride] += d[:, :, i, j]
    return dxp[:, :, pad : pad + h, pad : pad + w]


def conv_forward(x, w, b, stride, pad):
    cols, (ho, wo) = im2col(x, w.shape[2], stride, pad)
    out = cols @ w.reshape(w.shape[0], -1).T
    if b is not None:
        out += b
    return out.reshape(x.shape[0], ho, wo, w.shape[0]).transpose(0, 3, 1, 2), (cols, (ho, wo))


def conv_backward(dout, x_shape, w, cache, stride, pad):
    cols, hw = cache
    d = dout.transpose(0, 2, 3, 1).reshape(-1, w.shape[0])  # [N*Ho*Wo, Cout]
    dw = (d.T @ cols).reshape(w.shape)
    db = d.sum(axis=0)
    dx = col2im(d @ w.reshape(w.shape[0], -1), x_shape, w.shape[2], stride, pad, hw)
    return dx, dw, db


# --------------------------------------------------------------------------- model
def init_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {
        "conv1.weight": he((8, 1, 3, 3), 9),
        "bn1.scale": np.ones(8, np.float32),
        "bn1.bias": np.zeros(8, np.float32),
        "conv2.weight": he((16, 8, 3, 3), 72),
        "conv2.bias": np.zeros(16, np.float32),
        "fc.weight": he((10, 256), 256),
        "fc.bias": np.zeros(10, np.float32),
    }


def init_stats() -> dict[str, np.ndarray]:
    return {"bn1.mean": np.zeros(8, np.float32), "bn1.var": np.ones(8, np.float32)}


def forward(p, stats, x, train: bool):
    """Logits for a batch; in train mode also the cache for :func:`backward` (updates ``stats``)."""
    c1, c1_cache = conv_forward(x, p["conv1.weight"], None, 1, 1)
    if train:
        mean, var = c1.mean(axis=(0, 2, 3)), c1.var(axis=(0, 2, 3))
        stats["bn1.mean"] = BN_MOMENTUM * stats["bn1.mean"] + (1 - BN_MOMENTUM) * mean
        # ONNX's running variance is the unbiased batch variance
        m = c1.size // c1.shape[1]
        stats["bn1.var"] = BN_MOMENTUM * stats["bn1.var"] + (1 - BN_MOMENTUM) * var * m / (m - 1)
    else:
        mean, var = stats["bn1.mean"], stats["bn1.var"]
    inv = 1.0 / np.sqrt(var + BN_EPS)
    xhat = (c1 - mean[:, None, None]) * inv[:, None, None]
    bn = xhat * p["bn1.scale"][:, None, None] + p["bn1.bias"][:, None, None]
    r1 = np.maximum(bn, 0)
    c2, c2_cache = conv_forward(r1, p["conv2.weight"], p["conv2.bias"], 2, 1)
    r2 = np.maximum(c2, 0)
    flat = r2.reshape(len(x), -1)
    logits = flat @ p["fc.weight"].T + p["fc.bias"]
    cache = (x, c1_cache, xhat, inv, bn, r1, c2_cache, c2, flat)
    return logits.astype(np.float32), cache


def backward(p, cache, dlogits):
    x, c1_cache, xhat, inv, bn, r1, c2_cache, c2, flat = cache
    g = {"fc.weight": dlogits.T @ flat, "fc.bias": dlogits.sum(axis=0)}
    dr2 = (dlogits @ p["fc.weight"]).reshape(c2.shape)
    dc2 = dr2 * (c2 > 0)
    dr1, g["conv2.weight"], g["conv2.bias"] = conv_backward(dc2, r1.shape, p["conv2.weight"], c2_cache, 2, 1)
    dbn = dr1 * (bn > 0)
    axes = (0, 2, 3)
    g["bn1.scale"] = (dbn * xhat).sum(axis=axes)
    g["bn1.bias"] = dbn.sum(axis=axes)
    dxhat = dbn * p["bn1.scale"][:, None, None]
    # batch-norm backward through the batch statistics (mean over N, H, W per channel)
    dc1 = inv[:, None, None] * (
        dxhat - dxhat.mean(axis=axes, keepdims=True) - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True)
    )
    _, g["conv1.weight"], _ = conv_backward(dc1, x.shape, p["conv1.weight"], c1_cache, 1, 1)
    return g


def softmax_cross_entropy(logits, y):
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -logp[np.arange(len(y)), y].mean()
    dlogits = np.exp(logp)
    dlogits[np.arange(len(y)), y] -= 1
    return float(loss), (dlogits / len(y)).astype(np.float32)


class Adam:
    def __init__(self, params, lr=3e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4):
        self.lr, self.b1, self.b2, self.eps, self.wd = lr, betas[0], betas[1], eps, weight_decay
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params, grads, lr):
        self.t += 1
        for k, g in grads.items():
            if k.endswith("weight"):  # decoupled decay on weights only (AdamW), not on BN/bias
                params[k] -= lr * self.wd * params[k]
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            mhat = self.m[k] / (1 - self.b1**self.t)
            vhat = self.v[k] / (1 - self.b2**self.t)
            params[k] -= (lr * mhat / (np.sqrt(vhat) + self.eps)).astype(np.float32)


def predict(p, stats, x, batch=256):
    return np.concatenate([forward(p, stats, x[i : i + batch], train=False)[0] for i in range(0, len(x), batch)])


def train(seed: int, epochs: int, batch: int, lr: float):
    xtr, ytr, xte, yte = load_split(seed)
    rng = np.random.default_rng(seed + 1)
    params, stats = init_params(rng), init_stats()
    opt = Adam(params, lr=lr)
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        # cosine decay: large steps early, small ones to settle at the end
        epoch_lr = lr * 0.5 * (1 + np.cos(np.pi * (epoch - 1) / epochs))
        order = rng.permutation(len(ytr))
        losses = []
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            logits, cache = forward(params, stats, xtr[idx], train=True)
            loss, dlogits = softmax_cross_entropy(logits, ytr[idx])
            opt.step(params, backward(params, cache, dlogits), epoch_lr)
            losses.append(loss)
        train_acc = float((predict(params, stats, xtr).argmax(1) == ytr).mean())
        test_acc = float((predict(params, stats, xte).argmax(1) == yte).mean())
        print(
            f"epoch {epoch:2d}/{epochs}  loss {np.mean(losses):.4f}  train acc {train_acc:.4f}  "
            f"test acc {test_acc:.4f}  lr {epoch_lr:.2e}  {time.perf_counter() - t0:5.1f}s",
            flush=True,
        )
    return params, stats, (xte, yte), test_acc


# ---------------------------------------------------------------------------- export
def build_onnx(params, stats, test_acc: float, seed: int, epochs: int):
    """The trained network as an opset-17 ONNX model with a symbolic batch dim."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {**params, **stats}
    nodes = [
        helper.make_node(
            "Conv", ["image", "conv1.weight"], ["conv1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]
        ),
        helper.make_node(
            "BatchNormalization",
            ["conv1", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"],
            ["bn1"],
            name="bn1",
            epsilon=BN_EPS,
            momentum=BN_MOMENTUM,
        ),
        helper.make_node("Relu", ["bn1"], ["relu1"], name="relu1"),
        helper.make_node(
            "Conv",
            ["relu1", "conv2.weight", "conv2.bias"],
            ["conv2"],
            name="conv2",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[2, 2],
        ),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        helper.make_node("Flatten", ["relu2"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(v, np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="edgeinfer examples/train_digits.py",
        producer_version="1",
        doc_string="Small CNN classifying scikit-learn's 8x8 digits; input = load_digits pixels / 16.0.",
    )
    model.ir_version = 8  # opset 17's IR version, readable by older runtimes too
    meta = {
        "description": "Small CNN (Conv-BN-Relu, Conv-Relu, Gemm) classifying 8x8 handwritten digits 0-9. "
        "Input 'image': float32 [N,1,8,8] = sklearn load_digits() pixel values / 16.0. "
        "Output 'logits': float32 [N,10], argmax is the digit.",
        "dataset": f"sklearn.datasets.load_digits (1797 images); seeded permutation (seed {seed}): "
        f"{1797 - N_TEST} train / {N_TEST} test; test set in digits_test.npz",
        "test_accuracy": f"{test_acc:.4f}",
        "reproduce": REPRODUCE.format(seed=seed, epochs=epochs),
        "license": "Apache-2.0 (model); the digits data set is the UCI Optical Recognition of Handwritten "
        "Digits data, CC BY 4.0",
    }
    helper.set_model_props(model, meta)
    return model


def check_with_onnxruntime(model, params, stats, x: np.ndarray) -> float:
    """Max abs difference between ONNX Runtime and the numpy forward pass on ``x``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"image": x})[0]
    want = predict(params, stats, x)
    return float(np.abs(got - want).max())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)

    import onnx

    params, stats, (xte, yte), test_acc = train(args.seed, args.epochs, args.batch, args.lr)
    model = build_onnx(params, stats, test_acc, args.seed, args.epochs)
    onnx.checker.check_model(model, full_check=True)
    diff = check_with_onnxruntime(model, params, stats, xte)
    print(f"onnxruntime vs numpy forward: max abs diff {diff:.2e}")
    if diff > 1e-4:
        print("error: onnxruntime disagrees with the numpy forward pass", file=sys.stderr)
        return 1
    if test_acc < 0.95:
        print(f"error: test accuracy {test_acc:.4f} is below 0.95", file=sys.stderr)
        return 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out_dir / "digits_cnn.onnx"
    npz_path = args.out_dir / "digits_test.npz"
    onnx.save(model, onnx_path)
    np.savez_compressed(npz_path, images=xte.astype(np.float32), labels=yte.astype(np.int64))
    print(f"test accuracy {test_acc:.4f}")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1024:.1f} KiB)")
    print(f"wrote {npz_path} ({npz_path.stat().st_size / 1024:.1f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
