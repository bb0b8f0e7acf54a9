"""MTCNN ONet (Zhang et al. 2016, "Joint face detection and alignment using multitask cascaded convolutional
networks") rebuilt module-for-module from facenet-pytorch 2.6.0 (``facenet_pytorch/models/mtcnn.py``, MIT), so that
facenet's ``onet.pt`` state dict loads with ``strict=True``.  Input: (B, 3, 48, 48) crops scaled as facenet does,
``(pixel - 127.5) / 128``.  Output: ``(box_regression (B, 4), landmarks (B, 10), face_probability (B, 2))``, the
last after a softmax (column 1 = face).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

ONET_WHEEL, ONET_MEMBER = "facenet-pytorch==2.6.0", "facenet_pytorch/data/onet.pt"


class ONet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        for i, (cin, cout, k, pool) in enumerate([(3, 32, 3, 3), (32, 64, 3, 3), (64, 64, 3, 2), (64, 128, 2, 0)], 1):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, kernel_size=k))
            setattr(self, f"prelu{i}", nn.PReLU(cout))
            if pool:
                setattr(self, f"pool{i}", nn.MaxPool2d(pool, 2, ceil_mode=True))
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.softmax6_1 = nn.Linear(256, 2), nn.Softmax(dim=1)
        self.dense6_2, self.dense6_3 = nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        for i in range(1, 5):
            x = getattr(self, f"prelu{i}")(getattr(self, f"conv{i}")(x))
            x = getattr(self, f"pool{i}")(x) if i < 4 else x
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).contiguous().flatten(1)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


def onet_weights_path() -> Path:
    """facenet's ``onet.pt``: from an installed facenet-pytorch if present, else out of the cached PyPI wheel."""
    import importlib.metadata as md

    try:
        dist = md.distribution("facenet-pytorch")
        hit = next(f for f in dist.files or () if str(f).endswith("data/onet.pt"))
        return Path(dist.locate_file(hit))
    except (md.PackageNotFoundError, StopIteration):
        import importlib.util   # the repository's wheel cache helper, found from this file (works from any cwd)

        helper = Path(__file__).resolve().parents[1] / "tests" / "wheels.py"
        spec = importlib.util.spec_from_file_location("_hmu_wheels", helper)
        wheels = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(wheels)
        return wheels.wheel_member_file(ONET_WHEEL, ONET_MEMBER)


def onet(pretrained: bool = True) -> ONet:
    """ONet in eval mode; with ``pretrained`` the facenet weights are loaded ``strict=True``."""
    model = ONet()
    if pretrained:
        model.load_state_dict(torch.load(onet_weights_path(), map_location="cpu", weights_only=True), strict=True)
    return model.eval()
