-- OrleansMixtral on PostgreSQL, 3 of 3: grain storage (Orleans' ADO.NET persistence, invariant "Npgsql"), where the
-- conversations live (provider "conversations").
--
-- The contract Orleans expects: a grain's state is one row, found by its service id, grain type and id (two 64-bit
-- numbers and a string; the two hashes Orleans also passes only narrow the search), with the state's bytes and an
-- integer Version that is the state's ETag. A read returns PayloadBinary and Version (no row: the grain has no state).
-- A write with the version the grain read (null: it read no row) stores the bytes and returns the new version as
-- NewGrainStateVersion; with any other version it changes nothing and returns null, which Orleans reports as an
-- InconsistentStateException (another activation wrote first). A clear keeps the row, empties it, and returns the new
-- version the same way.

CREATE TABLE IF NOT EXISTS OrleansStorage
(
    GrainIdHash            integer      NOT NULL,
    GrainIdN0              bigint       NOT NULL,
    GrainIdN1              bigint       NOT NULL,
    GrainTypeHash          integer      NOT NULL,
    GrainTypeString        varchar(512) NOT NULL,
    GrainIdExtensionString text         NULL,
    ServiceId              varchar(150) NOT NULL,
    PayloadBinary          bytea        NULL,
    ModifiedOn             timestamptz  NOT NULL DEFAULT now(),
    Version                integer      NULL
);

-- One row per grain (what makes a concurrent first write of two activations conflict), and the lookup's index.
CREATE UNIQUE INDEX IF NOT EXISTS OrleansStorage_Grain ON OrleansStorage
    (GrainIdHash, GrainTypeHash, ServiceId, GrainTypeString, GrainIdN0, GrainIdN1, (coalesce(GrainIdExtensionString, '')));

CREATE OR REPLACE FUNCTION mixtral_storage_write(
    id_hash integer, id_n0 bigint, id_n1 bigint, type_hash integer, type_name text, id_extension text, service text,
    expected_version integer, payload bytea)
RETURNS TABLE (NewGrainStateVersion integer) LANGUAGE plpgsql AS $$
DECLARE written integer;
BEGIN
    IF expected_version IS NULL THEN
        INSERT INTO OrleansStorage (GrainIdHash, GrainIdN0, GrainIdN1, GrainTypeHash, GrainTypeString, GrainIdExtensionString,
            ServiceId, PayloadBinary, Version)
        VALUES (id_hash, id_n0, id_n1, type_hash, type_name, id_extension, service, payload, 1)
        ON CONFLICT DO NOTHING
        RETURNING Version INTO written;
    ELSE
        UPDATE OrleansStorage s SET PayloadBinary = payload, ModifiedOn = now(), Version = s.Version + 1
        WHERE s.GrainIdHash = id_hash AND s.GrainTypeHash = type_hash AND s.ServiceId = service AND s.GrainTypeString = type_name
            AND s.GrainIdN0 = id_n0 AND s.GrainIdN1 = id_n1 AND coalesce(s.GrainIdExtensionString, '') = coalesce(id_extension, '')
            AND s.Version = expected_version
        RETURNING s.Version INTO written;
    END IF;
    RETURN QUERY SELECT written;
END $$;

CREATE OR REPLACE FUNCTION mixtral_storage_clear(
    id_hash integer, id_n0 bigint, id_n1 bigint, type_hash integer, type_name text, id_extension text, service text,
    expected_version integer)
RETURNS TABLE (Version integer) LANGUAGE plpgsql AS $$
DECLARE cleared integer;
BEGIN
    UPDATE OrleansStorage s SET PayloadBinary = NULL, ModifiedOn = now(), Version = s.Version + 1
    WHERE s.GrainIdHash = id_hash AND s.GrainTypeHash = type_hash AND s.ServiceId = service AND s.GrainTypeString = type_name
        AND s.GrainIdN0 = id_n0 AND s.GrainIdN1 = id_n1 AND coalesce(s.GrainIdExtensionString, '') = coalesce(id_extension, '')
        AND s.Version = expected_version
    RETURNING s.Version INTO cleared;
    RETURN QUERY SELECT cleared;
END $$;

INSERT INTO OrleansQuery (QueryKey, QueryText) VALUES
('ReadFromStorageKey', '
    SELECT PayloadBinary, Version FROM OrleansStorage
    WHERE GrainIdHash = @GrainIdHash AND GrainTypeHash = @GrainTypeHash AND ServiceId = @ServiceId
        AND GrainTypeString = @GrainTypeString AND GrainIdN0 = @GrainIdN0 AND GrainIdN1 = @GrainIdN1
        AND coalesce(GrainIdExtensionString, '''') = coalesce(@GrainIdExtensionString::text, '''')'),
('WriteToStorageKey', '
    SELECT NewGrainStateVersion FROM mixtral_storage_write(@GrainIdHash, @GrainIdN0, @GrainIdN1, @GrainTypeHash,
        @GrainTypeString, @GrainIdExtensionString::text, @ServiceId, @GrainStateVersion::integer, @PayloadBinary)'),
('ClearStorageKey', '
    SELECT Version FROM mixtral_storage_clear(@GrainIdHash, @GrainIdN0, @GrainIdN1, @GrainTypeHash,
        @GrainTypeString, @GrainIdExtensionString::text, @ServiceId, @GrainStateVersion::integer)'),
('DeleteStorageKey', '
    WITH deleted AS (
        DELETE FROM OrleansStorage
        WHERE GrainIdHash = @GrainIdHash AND GrainTypeHash = @GrainTypeHash AND ServiceId = @ServiceId
            AND GrainTypeString = @GrainTypeString AND GrainIdN0 = @GrainIdN0 AND GrainIdN1 = @GrainIdN1
            AND coalesce(GrainIdExtensionString, '''') = coalesce(@GrainIdExtensionString::text, '''')
            AND Version = @GrainStateVersion::integer
        RETURNING Version)
    SELECT Version FROM deleted')
ON CONFLICT (QueryKey) DO UPDATE SET QueryText = EXCLUDED.QueryText;
