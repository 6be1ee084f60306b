"""What the robustness tests share: a tiny model config, hypothesis settings, and the
one-line error check."""

from hypothesis import HealthCheck

TINY = [
    "model.input_size=128",
    "model.anchors.scales=[[5],[11],[22],[44],[89]]",
    "model.fpn.num_features=32",
    "model.protonet_channels=32",
    "model.head_channels=32",
]

FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                   HealthCheck.data_too_large, HealthCheck.filter_too_much])


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)
    return text
