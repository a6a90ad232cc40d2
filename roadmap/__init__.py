"""roadmap: the ResNet-50 -> ConvNeXt 'modernizing a ResNet' roadmap as one configurable model."""
from .model import ModernizableResNet, build_model
from . import registry  # noqa: F401  (registers roadmap_<step> / roadmap200_<step> with timm)

__all__ = ["ModernizableResNet", "build_model"]
__version__ = "0.1.0"
