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
