import pytest
import torch

from nas import Arch, build_model
from nas.errors import NasError


@pytest.mark.parametrize("arch", [
    Arch(blocks=(1, 1), channels=(8, 16)),
    Arch(blocks=(2, 1, 1), channels=(8, 16, 32), kernels=(3, 5, 7), skip_kernels=(1, 3, 9), pool=2),
    Arch(blocks=(1, 1), channels=(16, 32), block="bottleneck", se_ratio=4, groups=2, dropout=0.1),
])
def test_forward_gives_finite_logits_of_the_right_shape(arch):
    model = build_model(arch)
    y = model(torch.randn(4, 3, 32, 32))
    assert y.shape == (4, 10) and torch.isfinite(y).all()


def test_first_layer_shortcut_is_identity_and_later_ones_project_with_skip_kernel():
    model = build_model(Arch(blocks=(1, 1), channels=(8, 16), skip_kernels=(5, 3)))
    assert isinstance(model.layers[0][0].shortcut, torch.nn.Identity)
    conv = model.layers[1][0].shortcut[0]
    assert conv.kernel_size == (3, 3) and conv.stride == (2, 2) and conv.padding == (1, 1)


def test_init_schemes_differ_and_unknown_scheme_lists_choices():
    arch = Arch(blocks=(1,), channels=(8,))
    torch.manual_seed(0)
    a = build_model(arch, init="kaiming").stem[0][0].weight.std()
    torch.manual_seed(0)
    b = build_model(arch, init="xavier").stem[0][0].weight.std()
    assert not torch.isclose(a, b)
    with pytest.raises(NasError, match="choose one of kaiming, xavier"):
        build_model(arch, init="orthogonal")


# -- the block families ---------------------------------------------------------------------------------
FAMILIES = [
    Arch(blocks=(2, 1), channels=(16, 32), stem_channels=8, block="preact", dropout=0.2, input_size=16),
    Arch(blocks=(2, 1), channels=(16, 32), stem_channels=8, block="resnext", groups=4, width_per_group=2, input_size=16),
    Arch(blocks=(2, 1), channels=(16, 32), stem_channels=8, block="res2net", width_per_group=2, scale=3, input_size=16),
    Arch(blocks=(2, 1, 1), channels=(16, 32, 32), kernels=(3, 1, 3), stem_channels=8, block="plain", input_size=11),
    Arch(blocks=(1, 1), channels=(16, 32), se_ratio=4, se_placement="stem", input_size=16),
]


@pytest.mark.parametrize("arch", FAMILIES, ids=lambda a: a.block + ("-se-stem" if a.se_ratio else ""))
def test_every_family_trains_a_step_with_finite_logits(arch):
    model = build_model(arch, seed=0)
    y = model(torch.randn(4, 3, arch.input_size, arch.input_size))
    assert y.shape == (4, 10) and torch.isfinite(y).all()
    y.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())  # every parameter counted is used


def _blocks(model):
    return [b for layer in model.layers for b in layer]


def test_preact_follows_the_wide_resnet_reference():
    """xternalz/WideResNet-pytorch: bare-conv stem, BN-ReLU before each conv, a BN-free 1x1 projection of the
    pre-activated input where the shape changes, the raw input where it does not, no ReLU after the addition,
    and a final BN-ReLU before pooling."""
    model = build_model(FAMILIES[0]).eval()
    assert [type(m) for m in model.stem] == [torch.nn.Conv2d]
    first, second = model.layers[0]
    assert isinstance(first.shortcut, torch.nn.Conv2d) and first.shortcut.kernel_size == (1, 1)
    assert isinstance(second.shortcut, torch.nn.Identity) and isinstance(first.post, torch.nn.Identity)
    assert [type(m) for m in model.final] == [torch.nn.BatchNorm2d, torch.nn.ReLU]
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        a = first.pre(x)
        assert torch.allclose(first(x), first.body(a) + first.shortcut(a))
        y = first(x)
        assert torch.allclose(second(y), second.body(second.pre(y)) + y)


def test_res2net_stage_blocks_pool_the_last_split_and_the_others_add_hierarchically():
    from nas.arch.model import Res2Split

    model = build_model(FAMILIES[2]).eval()
    splits = [next(m for m in b.body if isinstance(m, Res2Split)) for b in _blocks(model)]
    assert [len(s.convs) for s in splits] == [2, 2, 2]  # scale - 1 convs
    assert [type(s.pool) for s in splits] == [torch.nn.AvgPool2d, torch.nn.Identity, torch.nn.AvgPool2d]
    assert splits[2].pool.stride == 2 and splits[2].convs[0][0].stride == (2, 2)
    normal, w = splits[1], splits[1].width
    x = torch.randn(2, 3 * w, 16, 16)
    with torch.no_grad():
        y1 = torch.relu(normal.convs[0](x[:, :w]))
        y2 = torch.relu(normal.convs[1](x[:, w:2 * w] + y1))
        assert torch.allclose(normal(x), torch.cat([y1, y2, x[:, 2 * w:]], 1))


def test_plain_nets_max_pool_between_layers_and_have_no_shortcuts():
    arch = FAMILIES[3]
    model = build_model(arch)
    firsts = [layer[0] for layer in model.layers]
    assert isinstance(firsts[0].pre, torch.nn.Identity)
    assert all(isinstance(b.pre[0], torch.nn.MaxPool2d) for b in firsts[1:])
    assert not any(b.residual for b in _blocks(model))
    sides = []
    x = model.stem(torch.randn(1, 3, 11, 11))
    for layer in model.layers:
        x = layer(x)
        sides.append(x.shape[-1])
    assert tuple(sides) == arch.feature_sizes == (11, 6, 3)


def test_se_at_the_stem_is_one_unit_and_no_block_has_one():
    from nas.arch.model import SqueezeExcite

    model = build_model(FAMILIES[4])
    assert isinstance(model.stem[-1], SqueezeExcite)
    assert sum(isinstance(m, SqueezeExcite) for m in model.modules()) == 1


def test_basic_and_bottleneck_weights_keep_the_names_saved_checkpoints_use():
    keys = list(build_model(Arch(blocks=(1, 1), channels=(8, 16), se_ratio=4)).state_dict())
    assert keys[:7] == ["stem.0.0.weight", "stem.0.1.weight", "stem.0.1.bias", "stem.0.1.running_mean",
                        "stem.0.1.running_var", "stem.0.1.num_batches_tracked", "layers.0.0.body.0.0.weight"]
    assert "layers.0.0.body.3.0.weight" in keys and "layers.0.0.body.4.fc.0.weight" in keys
    assert "layers.1.0.shortcut.0.weight" in keys and "layers.1.0.shortcut.1.weight" in keys
    assert keys[-2:] == ["head.weight", "head.bias"]
