"""The built-in models: each one's paper recipe, its layer groups and the builder that makes it.

This module imports no torch (``lth models`` lists it at once); a builder's module is imported
the first time that model is built. Add a model with a builder function in a family module and
one :func:`add_model` line here (or, in your own code, ``@register_model`` on the builder).
"""

from __future__ import annotations

from lth.models.recipe import Recipe
from lth.models.registry import add_model

#: Frankle & Carbin (2019): Adam, layer-wise rates (fc 20%, conv 10%, output 10%), Glorot init.
LENET_RECIPE = Recipe(
    optimizer="adam",
    lr=1.2e-3,
    batch_size=60,
    budget="50000it",
    scope="layerwise",
    prune_rate_fc=0.2,
    prune_rate_conv=0.1,
    prune_rate_output=0.1,
    initializer="glorot_normal",
)


def conv_recipe(lr: float, budget: str, conv_rate: float) -> Recipe:
    """Conv-2/4/6 of Frankle & Carbin (2019): as LeNet's but their own lr, budget and conv rate."""
    return Recipe(
        optimizer="adam",
        lr=lr,
        batch_size=60,
        budget=budget,
        scope="layerwise",
        prune_rate_fc=0.2,
        prune_rate_conv=conv_rate,
        prune_rate_output=0.1,
        initializer="glorot_normal",
    )


def cifar_sgd_recipe(warmup: str) -> Recipe:
    """Frankle et al. (2019/2020) CIFAR-10 recipe: SGD 0.1, momentum 0.9, wd 1e-4, /10 at 80 and
    120 of 160 epochs, global pruning 20% per round, Kaiming init."""
    return Recipe(
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        batch_size=128,
        budget="160ep",
        milestones=("80ep", "120ep"),
        gamma=0.1,
        warmup=warmup,
        scope="global",
        prune_rate=0.2,
        prune_rate_fc=0.2,
        prune_rate_conv=0.2,
        prune_rate_output=0.2,
        initializer="kaiming_normal",
    )


VGG_RECIPE = cifar_sgd_recipe(warmup="10000it")
RESNET_RECIPE = cifar_sgd_recipe(warmup="1ep")

add_model(
    "lenet-300-100",
    "lenet",
    "fully-connected 300-100 LeNet (Frankle & Carbin 2019)",
    LENET_RECIPE,
    "lth.models.lenet:lenet_300_100",
    groups=("fc", "output"),
)
add_model(
    "lenet-5",
    "lenet",
    "convolutional LeNet-5 (LeCun et al. 1998)",
    LENET_RECIPE,
    "lth.models.lenet:lenet_5",
    groups=("fc", "conv", "output"),
)
for _depth, _lr, _budget, _conv_rate in (
    (2, 2e-4, "20000it", 0.1),
    (4, 3e-4, "25000it", 0.1),
    (6, 3e-4, "30000it", 0.15),
):
    add_model(
        f"conv-{_depth}",
        "conv",
        f"Conv-{_depth} of Frankle & Carbin (2019)",
        conv_recipe(_lr, _budget, _conv_rate),
        "lth.models.conv:conv_net",
        groups=("fc", "conv", "output"),
        depth=_depth,
    )
for _depth in (20, 32, 56):
    add_model(
        f"resnet-{_depth}",
        "resnet",
        f"CIFAR ResNet-{_depth} (He et al. 2016)",
        RESNET_RECIPE,
        "lth.models.resnet:resnet",
        groups=("conv", "output"),
        depth=_depth,
    )
for _depth in (11, 13, 16, 19):
    add_model(
        f"vgg-{_depth}",
        "vgg",
        f"CIFAR VGG-{_depth} with BatchNorm (Simonyan & Zisserman 2015)",
        VGG_RECIPE,
        "lth.models.vgg:vgg",
        groups=("conv", "output"),
        depth=_depth,
    )
