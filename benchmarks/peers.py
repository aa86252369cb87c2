"""The peers a benchmark runs beside netspec, on the same net and the same weights:
PyTorch (a functional mirror of a netspec Net, on the CPU or a GPU) and OpenCV's Caffe
importer."""
from __future__ import annotations

import numpy as np


class TorchMirror:
    """Runs a netspec Net's layers with torch.nn.functional, weights copied from the Net as
    leaf tensors (trainable when `train`). Covers the layers of LeNet, cifar10_quick, CaffeNet
    and ResNet-50 deploy nets; Caffe's ceil-rounded pooling is torch's ceil_mode."""

    def __init__(self, net, train: bool = False, device="cpu"):
        import torch
        self.torch, self.net = torch, net
        self.params = {name: [torch.tensor(b.data, requires_grad=train, device=device)
                              for b in blobs]
                       for name, blobs in net.params.items()}
        for layer in net.layers:  # Caffe's BatchNorm keeps sums and a scale factor
            if layer.type == "BatchNorm":
                mean, var, factor = self.params[layer.name]
                f = 1 / factor.item() if factor.item() else 0
                self.params[layer.name] = [mean * f, var * f]
        self.steps = []
        for layer, bottoms, tops in zip(net.layers, net.bottom_names.values(),
                                        net.top_names.values()):
            self.steps.append((layer, bottoms, tops))

    def parameters(self):
        return [t for ts in self.params.values() for t in ts]

    def forward(self, inputs: dict, stop_before: str | None = None):
        F, blobs = self.torch.nn.functional, dict(inputs)
        for layer, bottoms, tops in self.steps:
            if layer.name == stop_before:
                break
            if layer.type == "Input":
                continue
            x = [blobs[b] for b in bottoms]
            w = self.params.get(layer.name, [])
            p = layer.p
            t = layer.type
            if t == "Convolution":
                y = F.conv2d(x[0], w[0], w[1] if len(w) > 1 else None, p.strides, p.pads,
                             p.dilations, p.group)
            elif t == "InnerProduct":
                y = F.linear(x[0].flatten(1), w[0], w[1] if len(w) > 1 else None)
            elif t == "ReLU":
                y = F.relu(x[0])
            elif t == "Pooling":
                k = layer.kernel
                pool = F.max_pool2d if p.pool == "MAX" else F.avg_pool2d
                y = pool(x[0], k, p.strides if not p.global_pooling else 1, p.pads,
                         ceil_mode=True)
            elif t == "LRN":
                y = F.local_response_norm(x[0], p.local_size, p.alpha, p.beta, p.k)
            elif t == "BatchNorm":
                y = F.batch_norm(x[0], w[0], w[1], eps=p.eps)
            elif t == "Scale":
                y = x[0] * w[0][None, :, None, None]
                if len(w) > 1:
                    y = y + w[1][None, :, None, None]
            elif t == "Eltwise":
                y = x[0] + x[1]
            elif t in ("Dropout", "Split"):
                y = x[0]
            elif t == "Softmax":
                y = F.softmax(x[0], 1)
            else:
                raise NotImplementedError(f"no torch mirror for {t} layers")
            for top in tops:
                blobs[top] = y
        return blobs


def torch_training_step(net, device="cpu", compiled=False):
    """The PyTorch peer's training iteration on `net`'s mirror: SGD (lr 0.01, momentum 0.9,
    weight decay 5e-4, as the netspec side) on softmax cross-entropy over the scores the last
    (loss) layer reads; step(x, y) takes host tensors and moves them to `device`.
    `compiled`: the forward and loss through torch.compile."""
    import torch
    mirror = TorchMirror(net, train=True, device=device)
    opt = torch.optim.SGD(mirror.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005)
    loss_layer = net.layers[-1]
    scores = net.bottom_names[loss_layer.name][0]

    def loss_of(x, y):
        out = mirror.forward({"data": x}, stop_before=loss_layer.name)[scores]
        return torch.nn.functional.cross_entropy(out, y)
    loss_fn = torch.compile(loss_of) if compiled else loss_of

    def step(x, y):
        opt.zero_grad()
        loss_fn(x.to(device), y.to(device)).backward()
        opt.step()
    return step


def opencv_net(prototxt: str, caffemodel: str, threads: int):
    import cv2
    cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return net


def opencv_forward(net, batch: np.ndarray):
    net.setInput(batch)
    return net.forward()
