"""Searches built and run in threads (the programs of a vectorised study, lth.training.lockstep) share
torch's global RNG: none may seed or set it while another draws from it.

A search seeded the global RNG without the lock that model building holds: when that landed
between another thread's seeding and its draws, that thread's network was initialised from the
wrong stream. A vectorised study then trained another network than the study run alone, and
its masks differed in up to a third of a layer (seen in CI, 1 run in 3). These tests force that
interleaving with events instead of waiting for it.
"""

from __future__ import annotations

import threading

import torch

from lth.config import make_config
from lth.experiments.ticket_search import _Search

CONFIG = {"model": "lenet-300-100", "dataset": "digits", "rounds": 1, "iterations": 10, "device": "cpu"}


def _initial_weights(seed: int) -> dict[str, torch.Tensor]:
    return _Search(make_config({**CONFIG, "seed": seed}), None, progress=False).init_state


def test_a_search_built_in_another_thread_does_not_reseed_a_network_being_initialised(monkeypatch):
    alone = {seed: _initial_weights(seed) for seed in (1, 2)}

    drawing = threading.Event()  # thread 1 is between its seeding and its draws...
    drawn = threading.Event()  # ...until this
    reseeded = threading.Event()  # thread 2 touched the global RNG meanwhile (what must not happen)
    first = {"thread": None}
    real_seed, real_init = torch.manual_seed, torch.nn.init.xavier_normal_

    def xavier_normal_(tensor, *args, **kwargs):
        if threading.current_thread() is first["thread"] and not drawing.is_set():
            drawing.set()
            reseeded.wait(timeout=1.0)  # long enough for thread 2 to seed, if nothing stops it
            try:
                return real_init(tensor, *args, **kwargs)
            finally:
                drawn.set()
        return real_init(tensor, *args, **kwargs)

    def manual_seed(seed):
        generator = real_seed(seed)
        if threading.current_thread() is not first["thread"] and drawing.is_set() and not drawn.is_set():
            reseeded.set()
        return generator

    monkeypatch.setattr(torch.nn.init, "xavier_normal_", xavier_normal_)
    monkeypatch.setattr(torch, "manual_seed", manual_seed)
    built: dict[int, dict[str, torch.Tensor]] = {}

    def build(seed: int) -> None:
        built[seed] = _initial_weights(seed)

    one = threading.Thread(target=build, args=(1,))
    first["thread"] = one
    two = threading.Thread(target=lambda: (drawing.wait(timeout=10), build(2)))
    one.start()
    two.start()
    one.join(timeout=60)
    two.join(timeout=60)

    assert drawing.is_set(), "the hook did not run: lenet-300-100 is no longer initialised by xavier_normal_"
    assert not reseeded.is_set(), "a search seeded the global RNG while another thread drew its initial weights"
    for seed in (1, 2):
        assert built[seed].keys() == alone[seed].keys()
        assert all(torch.equal(built[seed][k], alone[seed][k]) for k in alone[seed]), seed
