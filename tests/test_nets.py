"""Networks: NTK parametrisation, parameter counts, normalised activations."""

import math

import pytest
import torch

from lightning_phase.errors import ConfigError
from lightning_phase.nets import ACTIVATIONS, Activation, ConvNet, FullyConnected, second_moment


@pytest.mark.parametrize("d,h,L", [(5, 7, 1), (10, 16, 2), (3, 4, 5)])
def test_n_params_of_bias_free_fc_is_dh_plus_l_minus_1_h2_plus_h(d, h, L):
    net = FullyConnected(width=h, depth=L, input_dim=d)
    assert net.n_params == d * h + (L - 1) * h * h + h


def test_biases_add_one_parameter_per_unit_and_start_at_zero():
    net = FullyConnected(width=6, depth=3, input_dim=4, bias=0.5)
    assert net.n_params == 4 * 6 + 2 * 36 + 6 + (3 * 6 + 1)
    assert all(float(layer.bias.detach().abs().sum()) == 0 for layer in net.layers)


@pytest.mark.parametrize("name,beta", [(a, 1.0) for a in ACTIVATIONS]
                         + [("softplus", 5.0), ("swish", 10.0), ("leaky_relu", 0.2)])
def test_activation_second_moment_is_one(name, beta):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2_000_000, generator=g, dtype=torch.float64)
    m2 = float(Activation(name, beta)(z).pow(2).mean())  # Monte Carlo, independent of the quadrature
    assert abs(m2 - 1) < 0.01, m2


def test_quadrature_matches_closed_forms():
    assert second_moment("tanh") == pytest.approx(0.394294, abs=1e-5)  # E[tanh(z)²], known value
    # softplus_β → relu as β → ∞
    assert second_moment("softplus", 200.0) == pytest.approx(0.5, abs=2e-3)


def test_fc_forward_is_the_ntk_parametrisation_formula():
    d, h = 5, 7
    net = FullyConnected(width=h, depth=2, input_dim=d, activation="tanh", seed=3).double()
    x = torch.randn(4, d, dtype=torch.float64)
    W0, W1, W2 = (layer.weight for layer in net.layers)
    c = 1 / math.sqrt(second_moment("tanh"))
    a1 = c * torch.tanh(x @ W0.T / math.sqrt(d))
    a2 = c * torch.tanh(a1 @ W1.T / math.sqrt(h))
    torch.testing.assert_close(net(x), (a2 @ W2.T / math.sqrt(h)).squeeze(1), rtol=0, atol=1e-13)


def test_init_depends_on_seed_only():
    a, b = FullyConnected(8, 2, input_dim=3, seed=1), FullyConnected(8, 2, input_dim=3, seed=1)
    c = FullyConnected(8, 2, input_dim=3, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)


def test_output_variance_is_order_one_for_any_width():
    x = torch.randn(2000, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for h in (16, 256):
        outs = torch.stack([FullyConnected(h, 2, input_dim=10, seed=s).double()(x[:50]) for s in range(40)])
        assert 0.3 < float(outs.var()) < 3.0


@pytest.mark.parametrize("kwargs,field", [
    ({"width": 0, "depth": 2, "input_dim": 3}, "model.net.init_args.width"),
    ({"width": 4, "depth": 0, "input_dim": 3}, "model.net.init_args.depth"),
    ({"width": 4, "depth": 2, "input_dim": None}, "model.net.init_args.input_dim"),
    ({"width": 4, "depth": 2, "input_dim": 3, "activation": "gelu"}, "model.net.init_args.activation"),
    ({"width": 4, "depth": 2, "input_dim": 3, "activation": "softplus", "activation_beta": -1},
     "model.net.init_args.activation_beta"),
    ({"width": 2.5, "depth": 2, "input_dim": 3}, "model.net.init_args.width"),
])
def test_bad_net_arguments_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        FullyConnected(**kwargs)


def test_convnet_architecture_of_fl():
    net = ConvNet(width=6, in_channels=1, input_dim=64, seed=0).double()
    x = torch.randn(3, 64, dtype=torch.float64)
    assert net(x).shape == (3,)
    assert net(x.reshape(3, 1, 8, 8)).allclose(net(x))
    k = 5
    assert net.n_params == 1 * 6 * k * k + 3 * 6 * 6 * k * k + 6  # 4 convs, no bias, readout
    assert [c.stride for c in net.convs] == [2, 1, 2, 1]


def test_convnet_rejects_non_square_input():
    with pytest.raises(ConfigError, match="model.net.init_args.input_dim"):
        ConvNet(width=4, in_channels=3, input_dim=40)
