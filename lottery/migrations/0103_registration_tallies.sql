-- Live and withdrawn registrations per campaign, kept by triggers in the writing transaction, so
-- the public campaign pages read a few rows instead of counting millions of registrations.
--
-- Each campaign's figure is split over up to 16 shard rows, chosen by the writing backend
-- (pg_backend_pid() % 16), and summed on read: the group commit runs several INSERT batches at
-- once on different connections, and one row per campaign would make their commits queue on its
-- row lock. The triggers are statement-level with transition tables, so a batch of 256 inserts
-- updates one row per campaign it touches, not 256. Nothing is indexed but the key, and the table
-- leaves room in its pages, so each update is a HOT update that pruning cleans up in place.

CREATE TABLE registration_tallies (
    campaign_id  text NOT NULL REFERENCES campaigns (id),
    shard        smallint NOT NULL CHECK (shard BETWEEN 0 AND 15),
    live         bigint NOT NULL,
    withdrawn    bigint NOT NULL,
    PRIMARY KEY (campaign_id, shard)
) WITH (fillfactor = 50);

-- Each trigger adds its statement's changes in campaign order, so two statements touching the
-- same campaigns on one shard cannot deadlock.
CREATE FUNCTION registration_tallies_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO registration_tallies AS t (campaign_id, shard, live, withdrawn)
    SELECT campaign_id, pg_backend_pid() % 16,
           count(*) FILTER (WHERE withdrawn_at IS NULL), count(*) FILTER (WHERE withdrawn_at IS NOT NULL)
    FROM inserted GROUP BY campaign_id ORDER BY campaign_id
    ON CONFLICT (campaign_id, shard)
    DO UPDATE SET live = t.live + excluded.live, withdrawn = t.withdrawn + excluded.withdrawn;
    RETURN NULL;
END $$;

CREATE FUNCTION registration_tallies_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO registration_tallies AS t (campaign_id, shard, live, withdrawn)
    SELECT campaign_id, pg_backend_pid() % 16, sum(live), sum(withdrawn)
    FROM (SELECT campaign_id, CASE WHEN withdrawn_at IS NULL THEN 1 ELSE 0 END AS live,
                 CASE WHEN withdrawn_at IS NULL THEN 0 ELSE 1 END AS withdrawn FROM updated
          UNION ALL
          SELECT campaign_id, CASE WHEN withdrawn_at IS NULL THEN -1 ELSE 0 END,
                 CASE WHEN withdrawn_at IS NULL THEN 0 ELSE -1 END FROM replaced) AS d
    GROUP BY campaign_id
    HAVING sum(live) <> 0 OR sum(withdrawn) <> 0  -- an update that withdraws nothing costs no write
    ORDER BY campaign_id
    ON CONFLICT (campaign_id, shard)
    DO UPDATE SET live = t.live + excluded.live, withdrawn = t.withdrawn + excluded.withdrawn;
    RETURN NULL;
END $$;

CREATE FUNCTION registration_tallies_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO registration_tallies AS t (campaign_id, shard, live, withdrawn)
    SELECT campaign_id, pg_backend_pid() % 16,
           -count(*) FILTER (WHERE withdrawn_at IS NULL), -count(*) FILTER (WHERE withdrawn_at IS NOT NULL)
    FROM deleted GROUP BY campaign_id ORDER BY campaign_id
    ON CONFLICT (campaign_id, shard)
    DO UPDATE SET live = t.live + excluded.live, withdrawn = t.withdrawn + excluded.withdrawn;
    RETURN NULL;
END $$;

CREATE FUNCTION registration_tallies_after_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM registration_tallies;
    RETURN NULL;
END $$;

-- Writers wait from here to commit, so no registration lands between the backfill and the
-- triggers (the statements below see every row committed before the lock was granted).
LOCK TABLE registrations IN SHARE ROW EXCLUSIVE MODE;

-- Transition tables need one event per trigger, and allow no column list on UPDATE: the update
-- trigger adds nothing when withdrawn_at did not change (the HAVING above).
CREATE TRIGGER registration_tallies_insert AFTER INSERT ON registrations
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION registration_tallies_after_insert();
CREATE TRIGGER registration_tallies_update AFTER UPDATE ON registrations
    REFERENCING OLD TABLE AS replaced NEW TABLE AS updated
    FOR EACH STATEMENT EXECUTE FUNCTION registration_tallies_after_update();
CREATE TRIGGER registration_tallies_delete AFTER DELETE ON registrations
    REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT EXECUTE FUNCTION registration_tallies_after_delete();
CREATE TRIGGER registration_tallies_truncate AFTER TRUNCATE ON registrations
    FOR EACH STATEMENT EXECUTE FUNCTION registration_tallies_after_truncate();

INSERT INTO registration_tallies (campaign_id, shard, live, withdrawn)
SELECT campaign_id, 0, count(*) FILTER (WHERE withdrawn_at IS NULL), count(*) FILTER (WHERE withdrawn_at IS NOT NULL)
FROM registrations GROUP BY campaign_id;
