"""lth: a laboratory for the Lottery Ticket Hypothesis.

Find sparse trainable sub-networks ("winning tickets") by iterative magnitude pruning with
rewinding, on the bundled models or any ``torch.nn.Module``.
"""
__version__ = "0.1.0"

from lth.config import TicketConfig  # noqa: E402
from lth.errors import LthError  # noqa: E402
from lth.experiments import TicketResult, find_ticket  # noqa: E402
from lth.experiments.branches import branch  # noqa: E402
from lth.experiments.lottery_model import LotteryModel  # noqa: E402
from lth.experiments.lottery_robust import LotteryRobust  # noqa: E402
from lth.experiments.lottery_session import LotterySession  # noqa: E402
from lth.experiments.stability import stability  # noqa: E402
from lth.experiments.statistics import summarise_trials  # noqa: E402
from lth.init_pruning import InitPruning, prune_at_init  # noqa: E402
from lth.mask_from_weights import compute_mask  # noqa: E402
from lth.masks import Mask  # noqa: E402
from lth.pruning import prunable_parameters, prune  # noqa: E402
from lth.torch_prune import apply_with_torch_prune, mask_from_torch_prune  # noqa: E402

__all__ = [
    "InitPruning", "LotteryModel", "LotteryRobust", "LotterySession", "LthError", "Mask", "TicketConfig", "TicketResult",
    "__version__", "apply_with_torch_prune", "branch", "compute_mask", "find_ticket", "mask_from_torch_prune",
    "prunable_parameters", "prune", "prune_at_init", "stability", "summarise_trials",
]
