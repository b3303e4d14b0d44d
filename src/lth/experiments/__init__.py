"""Experiments compose the pieces: the ticket search (iterative magnitude pruning)."""

from lth.experiments.ticket_search import TicketResult, find_ticket, resolve_device

__all__ = ["TicketResult", "find_ticket", "resolve_device"]
