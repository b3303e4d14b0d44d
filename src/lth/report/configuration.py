"""A run's configuration in a report: the settings that differ from their defaults first (with
the default beside each), the full configuration collapsed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lth.report.blocks import Details, Table, Text, scalar


def flatten(config: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested mappings as dotted keys: {"supermask": {"seed": 0}} -> [("supermask.seed", "0")]."""
    rows: list[tuple[str, str]] = []
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            rows += flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", scalar(value)))
    return rows


def config_table(config: Mapping[str, Any]) -> Table:
    return Table(["setting", "value"], [[k, v] for k, v in flatten(config)])


def config_defaults(config: Mapping[str, Any]) -> dict[str, str] | None:
    """The default of every setting of a ticket-search config (a find-ticket run's, a branch's, a
    supermask-eval or stability run's, a study trial's), flattened as :func:`config_table` writes
    them: :class:`~lth.config.TicketConfig`'s own, with the recipe of ``config["model"]`` filled
    in as ``lth find-ticket MODEL DATASET`` does. None for a config of another kind
    (supermask-train) or of a model not registered in this process (its recipe is unknown)."""
    from lth.config import TicketConfig
    from lth.models import MODELS

    if not isinstance(config, Mapping) or not all(k in config for k in ("model", "dataset", "criterion", "mask1")):
        return None
    try:
        spec = MODELS.get(str(config["model"]))
        base = TicketConfig(model=str(config["model"]), dataset=str(config["dataset"])).with_recipe(spec.recipe)
    except Exception:  # an unknown model (LthError), a recipe this TicketConfig refuses
        return None
    return dict(flatten(base.model_dump()))


def config_blocks(config: Mapping[str, Any], what: str = "configuration") -> list[Any]:
    """The settings that differ from their defaults (:func:`config_defaults`) first, with the
    default beside each, then those without a default to compare with (a run kind's own settings,
    such as ``supermask.*``), then the full configuration, collapsed."""
    from lth.config import TicketConfig

    rows = flatten(config)
    defaults = config_defaults(config)
    blocks: list[Any] = []
    if defaults is None:
        blocks.append(
            Text(
                f"No defaults are known for this {what} (not a ticket search's, or its model is not "
                "registered here): every setting is in the full table below."
            )
        )
    else:
        recipe_filled = {k for k, f in TicketConfig.model_fields.items() if f.default is None}
        changed = [
            [key, value, defaults[key]]
            for key, value in rows
            if key in defaults and value != defaults[key] and not (value == "null" and key in recipe_filled)
        ]  # None: "take the recipe's"
        own = [[key, value] for key, value in rows if key not in defaults]
        source = f"lth.config.TicketConfig's, with the recipe of {scalar(config.get('model'))} filled in"
        if changed:
            blocks.append(
                Table(
                    ["setting", "value", "default"],
                    changed,
                    f"{len(changed)} setting{'s' * (len(changed) != 1)} differ{'s' * (len(changed) == 1)} "
                    f"from the defaults ({source})",
                )
            )
        else:
            blocks.append(Text(f"Every setting has its default value ({source})."))
        if own:
            blocks.append(Table(["setting", "value"], own, "Settings of this kind of run (no default to compare with)"))
    blocks.append(Details(f"Full {what} ({len(rows)} settings)", [config_table(config)]))
    return blocks
