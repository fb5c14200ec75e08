-- Published artefacts (the committed registrant list, the signed bundle): written once when they
-- become final, named by the SHA-256 of their bytes, kept in chunks so that any API node can copy
-- one to its local disk without a shared filesystem. `published_artefacts` names them ("<campaign>/
-- registrants.csv"); a name, once bound, never points elsewhere.
CREATE TABLE artefacts (
    sha256      bytea PRIMARY KEY CHECK (length(sha256) = 32),
    size        bigint NOT NULL CHECK (size >= 0),
    media_type  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE artefact_chunks (
    sha256  bytea NOT NULL REFERENCES artefacts ON DELETE CASCADE,
    chunk   integer NOT NULL CHECK (chunk >= 0),
    data    bytea NOT NULL,
    PRIMARY KEY (sha256, chunk)
);

CREATE TABLE published_artefacts (
    name          text PRIMARY KEY,
    sha256        bytea NOT NULL REFERENCES artefacts,
    published_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
