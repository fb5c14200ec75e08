"""Every action that needs a second operator, wired to what runs it.

The assembly's job, not an import's side effect: the draw is given its hand-over to packets here,
so whatever runs a draw (the jobs worker, the API's prechecks, a bench) gets the same wiring, and
a process that never wired the actions refuses them by name instead of drawing without packets.
"""

from __future__ import annotations

from kernel import approvals
from kernel.approvals import Action
from lottery import actions as lottery_actions
from lottery import commitment, draw
from stimulus import __version__
from wallet_adapter import issuance


def actions() -> dict[str, Action]:
    return {
        lottery_actions.COMMIT: Action(commitment.execute, commitment.precheck),
        lottery_actions.RUN: Action(draw.executor(hand_overs=[issuance.hand_over], software_version=__version__),
                                    draw.precheck),
        issuance.BULK_START: Action(issuance.bulk_execute, issuance.bulk_precheck),
    }


def install() -> dict[str, Action]:
    """Make the actions known to `approvals.request` and `approvals.approve` in this process."""
    wired = actions()
    approvals.ACTIONS.update(wired)
    return wired
