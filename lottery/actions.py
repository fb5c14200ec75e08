"""The names of the lottery's maker-checker actions; stimulus.actions wires them to what runs them."""

from __future__ import annotations

COMMIT = "draw.commit"
RUN = "draw.run"
