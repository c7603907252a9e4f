from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from edge_squeeze.errors import EdgeSqueezeError  # noqa: E402
from edge_squeeze.models import (  # noqa: E402
    SqueezeNetConfig,
    config_for,
    family_table,
    model_cost,
    squeezenet1_0,
    squeezenet1_1,
)


@pytest.mark.parametrize(
    ("factory", "classes", "params", "macs"),
    [
        (squeezenet1_0, 1000, 1_248_424, 818_924_576),
        (squeezenet1_1, 1000, 1_235_496, 349_151_936),
        (squeezenet1_0, 10, 740_554, 733_261_856),  # the seed experiment
    ],
)
def test_params_and_macs_match_the_paper(factory, classes, params, macs):
    cost = model_cost(factory(num_classes=classes), 224)
    assert cost.params == params
    assert cost.conv_macs == macs


def test_seed_experiment_mult_adds_as_torchinfo_counts_them():
    cost = model_cost(squeezenet1_0(num_classes=10), 224)
    assert round(cost.macs_with_bias / 1e6, 2) == 737.44


def test_squeezenet_1_1_needs_about_2_4x_less_compute():
    ratio = model_cost(squeezenet1_0()).conv_macs / model_cost(squeezenet1_1()).conv_macs
    assert 2.3 < ratio < 2.4


def test_default_metaparameters_reproduce_squeezenet_1_0_fire_widths():
    widths = SqueezeNetConfig().fire_widths()
    assert widths == [
        (16, 64, 64),
        (16, 64, 64),
        (32, 128, 128),
        (32, 128, 128),
        (48, 192, 192),
        (48, 192, 192),
        (64, 256, 256),
        (64, 256, 256),
    ]


def test_metaparameters_change_the_architecture():
    small = model_cost(squeezenet1_0(squeeze_ratio=0.25, pct_3x3=0.25)).params
    assert small != model_cost(squeezenet1_0()).params
    config = config_for("squeezenet1_0", base_e=64, incr_e=64, freq=1)
    assert [s + e1 + e3 for s, e1, e3 in config.fire_widths()][:2] == [8 + 32 + 32, 16 + 64 + 64]


def test_simple_bypass_adds_no_parameters_complex_bypass_does():
    plain = model_cost(squeezenet1_0()).params
    assert model_cost(squeezenet1_0(bypass="simple")).params == plain
    assert model_cost(squeezenet1_0(bypass="complex")).params > plain


def test_simple_bypass_changes_the_output():
    torch.manual_seed(0)
    plain = squeezenet1_0(num_classes=10).eval()
    bypass = squeezenet1_0(num_classes=10, bypass="simple").eval()
    bypass.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(plain(x), bypass(x))


@pytest.mark.parametrize("bypass", ["simple", "complex"])
def test_bypassed_fires_start_as_their_shortcut(bypass):
    """Bypass sums must not compound the activation scale at initialisation (training stalled when they did)."""
    from edge_squeeze.models import Fire

    torch.manual_seed(0)
    model = squeezenet1_0(num_classes=10, bypass=bypass).eval()
    fires = [m for m in model.modules() if isinstance(m, Fire) and m.has_bypass]
    assert len(fires) == (4 if bypass == "simple" else 8)
    x = torch.randn(4, 3, 96, 96)
    with torch.no_grad():
        h = x
        for layer in model.features:
            out = layer(h)
            if isinstance(layer, Fire) and layer.identity_bypass:
                assert torch.equal(out, h)
            h = out
        # before the bypassed expands started at zero: 1.6 (simple) and 13 (complex), at 64x64
        assert model(x).std() < 1.0


def test_torchvision_key_names():
    keys = set(squeezenet1_1().state_dict())
    assert {
        "features.0.weight",
        "features.3.squeeze.weight",
        "features.3.expand3x3.bias",
        "classifier.1.weight",
    } <= keys
    assert len(keys) == 52


def test_output_shape_for_any_input_size():
    model = squeezenet1_1(num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 96, 96)).shape == (2, 7)


def test_bad_config_is_a_clear_error():
    with pytest.raises(EdgeSqueezeError, match="bypass"):
        squeezenet1_0(bypass="residual")
    with pytest.raises(EdgeSqueezeError, match="unknown architecture"):
        config_for("squeezenet2_0")


def test_family_table_rows():
    rows = family_table()
    assert len(rows) == 6
    row = next(r for r in rows if r["arch"] == "squeezenet1_0" and r["bypass"] == "none")
    assert row["params"] == 1_248_424
    assert abs(row["fp32_mb"] - 4.99) < 0.01
