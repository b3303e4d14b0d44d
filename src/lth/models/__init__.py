"""Model zoo: registered architectures, each with its paper's training + pruning recipe.

Add a model with one decorated builder function in a family module::

    @register_model("my-net", "mine", "what it is", recipe)
    def my_net(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module: ...
"""
from lth.models.init import INITIALIZERS, initialize
from lth.models.recipe import Recipe
from lth.models.registry import MODELS, ModelSpec, build_model, register_model

# Importing the family modules registers their models.
from lth.models import conv, lenet, resnet, vgg  # noqa: E402,F401  isort:skip

__all__ = [
    "INITIALIZERS",
    "MODELS",
    "ModelSpec",
    "Recipe",
    "build_model",
    "initialize",
    "register_model",
]
