"""nas.engine.recipe: validation, serialisation, and overrides that keep the recipe trainable."""

from __future__ import annotations

import math

import pytest

from nas.arch import model
from nas.engine import recipe
from nas.engine.recipe import Recipe
from nas.errors import NasError

SEARCH_BASE = Recipe(epochs=4, batch_size=128, lr=0.2, nesterov=True, schedule="onecycle", label_smoothing=0.1,
                     weight_decay=5e-4)  # the search's base recipe


@pytest.mark.parametrize("field, value, words", [
    ("epochs", 0, "epochs=0"), ("batch_size", 1, ">= 2"), ("optimizer", "lbfgs", "sgd, sgd-nesterov, adam"),
    ("lr", -0.1, "> 0"), ("lr", math.nan, "finite"), ("momentum", 1.0, "[0, 1)"), ("schedule", "linear", "cosine"),
    ("warmup_epochs", 200.0, "< epochs"), ("label_smoothing", 1.0, "[0, 1)"), ("grad_clip", -1.0, ">= 0"),
    ("init", "orthogonal", "kaiming, xavier"), ("pad_mode", "edge", "zeros, reflect"), ("rotation", 400.0, "180"),
    ("cutout", -2, ">= 0"), ("precision", "fp8", "auto, fp32"), ("evals_per_epoch", 0, ">= 1"),
    ("epochs", 2.5, "type int"), ("flip", 1, "type bool"), ("batch_size", True, "type int"),
])
def test_bad_recipe_values_name_field_value_and_rule(field, value, words):
    with pytest.raises(NasError) as err:
        Recipe(**{field: value})
    assert field in str(err.value) and words in str(err.value)


def test_nesterov_needs_sgd_with_momentum():
    with pytest.raises(NasError, match="nesterov"):
        Recipe(optimizer="adam", nesterov=True)
    with pytest.raises(NasError, match="momentum > 0"):
        Recipe(nesterov=True, momentum=0.0)


def test_recipe_round_trips_and_rejects_unknown_keys():
    r = Recipe(epochs=10, optimizer="adamw", lookahead=True, rotation=5.0, cutout=8)
    assert Recipe.from_dict(r.to_dict()) == r
    assert Recipe.from_dict({"weight_decay": "5e-4", "lr": 1}) == Recipe(weight_decay=5e-4, lr=1.0)  # YAML 1.1
    with pytest.raises(NasError, match="'learning_rate'.*valid keys: epochs, batch_size"):
        Recipe.from_dict({"learning_rate": 0.1})


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "adagrad", "adamax", "adadelta"])
def test_an_sgd_base_updated_to_another_optimizer_drops_nesterov(optimizer):
    r = SEARCH_BASE.updated({"optimizer": optimizer, "lr": 1e-3})
    assert (r.optimizer, r.lr, r.nesterov, r.schedule, r.epochs) == (optimizer, 1e-3, False, "onecycle", 4)


def test_updated_keeps_nesterov_where_it_applies_and_refuses_it_where_asked_for_and_impossible():
    assert SEARCH_BASE.updated({"optimizer": "sgd", "lr": 0.05}).nesterov is True
    assert SEARCH_BASE.updated({"momentum": 0.0}).nesterov is False
    assert Recipe().updated({"nesterov": True}).nesterov is True
    with pytest.raises(NasError, match="nesterov=True applies only to optimizer 'sgd'"):
        SEARCH_BASE.updated({"optimizer": "adam", "nesterov": True})
    with pytest.raises(NasError, match="warmup_epochs=5.0 must be >= 0 and < epochs"):
        SEARCH_BASE.updated({"warmup_epochs": 5})
    with pytest.raises(NasError, match="'learning_rate'.*valid keys"):
        SEARCH_BASE.updated({"learning_rate": 0.1})
    assert SEARCH_BASE.updated({}) == SEARCH_BASE and SEARCH_BASE.updated({"weight_decay": "1e-4"}).weight_decay == 1e-4


def test_sgd_nesterov_is_an_optimizer_of_its_own_beside_plain_sgd_and_adam():
    """Plain and Nesterov SGD share one optimizer axis with Adam: sgd-nesterov steps with Nesterov momentum
    whatever the recipe's nesterov (which stays SGD's own switch), and still needs momentum."""
    import torch

    from nas.engine.optimizers import OPTIMIZERS

    for base in (SEARCH_BASE, Recipe()):
        r = base.updated({"optimizer": "sgd-nesterov"})
        assert (r.optimizer, r.nesterov, r.momentum) == ("sgd-nesterov", False, 0.9)
    params = [torch.nn.Parameter(torch.zeros(2))]
    built = OPTIMIZERS["sgd-nesterov"].build(params, 0.1, 0.9, False, 5e-4)
    assert type(built) is torch.optim.SGD and built.param_groups[0]["nesterov"] is True
    assert OPTIMIZERS["sgd"].build(params, 0.1, 0.9, False, 5e-4).param_groups[0]["nesterov"] is False
    with pytest.raises(NasError, match="momentum=0.0 must be > 0 for optimizer 'sgd-nesterov'"):
        Recipe().updated({"optimizer": "sgd-nesterov", "momentum": 0.0})


def test_init_schemes_are_defined_once_by_the_model_builder():
    assert recipe.INITS is model.INITS
