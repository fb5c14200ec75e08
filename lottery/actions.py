"""The lottery's maker-checker actions, registered with stimulus.approvals on import."""

from __future__ import annotations

from lottery import commitment, draw
from stimulus import approvals

COMMIT = "draw.commit"
RUN = "draw.run"

approvals.register(COMMIT, commitment.execute, commitment.precheck)
approvals.register(RUN, draw.execute, draw.precheck)
