-- Maker-checker: an action one operator requests and a different operator approves.

CREATE TABLE approvals (
    id            bigserial PRIMARY KEY,
    action        text NOT NULL,
    subject       text NOT NULL,
    params        jsonb NOT NULL DEFAULT '{}',
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'executed', 'rejected', 'failed')),
    requested_by  text NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    decided_by    text,
    decided_at    timestamptz,
    result        jsonb,
    CHECK (decided_by IS NULL OR decided_by <> requested_by)
);
-- At most one open request per action and subject: two pending draws for one campaign would let
-- a checker choose between them.
CREATE UNIQUE INDEX approvals_one_pending ON approvals (action, subject) WHERE status = 'pending';
