import numpy as np
import pytest
import torch
import torch.nn.functional as F

from yolact_lite import CheckpointError, build_model, load_config
from yolact_lite.config import BackboneConfig
from yolact_lite.model.pretrained import efficientnet_lite0_file, load_imagenet_weights


def test_efficientnet_lite0_weights_are_imagenet_weights():
    """The backbone with the packaged weights, plus the file's own classifier, calls
    scikit-image's 'chelsea' photo a cat (ImageNet classes 281-285)."""
    data = pytest.importorskip("skimage.data")
    model = build_model(load_config("yolact_effl0"), pretrained=True).eval()
    state = torch.load(efficientnet_lite0_file(), map_location="cpu", weights_only=True)
    image = torch.from_numpy(np.ascontiguousarray(data.chelsea())).permute(2, 0, 1).float()[None]
    image = F.interpolate(image, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(model.config.pixel_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.config.pixel_std).view(1, 3, 1, 1)
    with torch.no_grad():
        c5 = model.backbone((image - mean) / std)[-1]
        x = F.conv2d(c5, state["_conv_head.weight"])
        x = F.batch_norm(x, state["_bn1.running_mean"], state["_bn1.running_var"],
                         state["_bn1.weight"], state["_bn1.bias"], eps=1e-3)
        logits = F.linear(F.relu6(x).mean((2, 3)), state["_fc.weight"], state["_fc.bias"])
    probs = logits.softmax(-1)[0]
    assert int(probs.argmax()) in range(281, 286)
    assert probs[281:286].sum() > 0.8
    # A randomly initialised backbone does not do this.
    fresh = build_model(load_config("yolact_effl0"), pretrained=False).eval()
    assert not torch.equal(fresh.backbone.stem[0].weight, model.backbone.stem[0].weight)


def test_backbone_weights_file_that_does_not_fit(tmp_path):
    path = tmp_path / "r50.pth"
    torch.save({"conv1.weight": torch.zeros(3, 3)}, path)
    model = build_model(load_config("yolact_resnet50"), pretrained=False)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_imagenet_weights(model.backbone, BackboneConfig(name="resnet50", weights=str(path)))


def test_darknet_without_a_file_fails_clearly():
    with pytest.raises(CheckpointError, match="darknet53 has no offline ImageNet weights"):
        build_model(load_config("yolact_darknet53"), pretrained=True)
