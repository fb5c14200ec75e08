-- Which drand relay answered a fetched beacon (NULL when an operator submitted the signature).
-- Kept beside the bundle's beacon section, not in it: the relay is a courier, not evidence.
ALTER TABLE beacons ADD COLUMN relay text;
