-- Jobs: long actions (the commitment, the draw, bulk issuance) run off the request path.
-- Approving records the approval and enqueues its job in one transaction; a jobs worker claims it
-- with FOR UPDATE SKIP LOCKED and holds it by a lease it renews while it runs. A worker that dies
-- leaves the job to another once the lease expires; the job's effect commits in one transaction
-- with the job's success, fenced on the lease, so it happens once.
CREATE TABLE jobs (
    id                bigserial PRIMARY KEY,
    kind              text NOT NULL,
    args              jsonb NOT NULL DEFAULT '{}',
    state             text NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    attempts          integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL DEFAULT 3,
    lease_holder      text,
    lease_expires_at  timestamptz,
    progress_done     bigint NOT NULL DEFAULT 0,
    progress_total    bigint,
    progress_step     text,
    result            jsonb,
    error             jsonb,
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    not_before        timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- What a worker looks for: queued jobs due now, and running jobs whose lease has run out.
CREATE INDEX jobs_claimable ON jobs (id) WHERE state IN ('queued', 'running');

-- An approved action waits for its job: `approved` until the job succeeds (`executed`) or fails.
ALTER TABLE approvals DROP CONSTRAINT approvals_status_check;
ALTER TABLE approvals ADD CONSTRAINT approvals_status_check
    CHECK (status IN ('pending', 'approved', 'executed', 'rejected', 'failed'));
ALTER TABLE approvals ADD COLUMN job_id bigint REFERENCES jobs (id);
