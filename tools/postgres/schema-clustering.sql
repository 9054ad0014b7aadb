-- OrleansMixtral on PostgreSQL, 2 of 3: cluster membership (Orleans' ADO.NET clustering, invariant "Npgsql").
--
-- The contract Orleans expects: one version row per cluster (DeploymentId = the ClusterId) whose Version is the whole
-- membership table's ETag, and one row per silo (address, port, generation). Every change to a silo's row must bump
-- the version in the same transaction and only if the caller read the current version; such queries return one row of
-- one column, 1 for done and 0 for refused (a stale version, a row that already exists or does not). Reads return the
-- version row joined with the silos' rows (a cluster with no silo yet: one row, its StartTime null). Times are UTC.
-- SuspectTimes is Orleans' own text ("silo,time|silo,time"). Status is Orleans' SiloStatus: 3 Active, 6 Dead.

CREATE TABLE IF NOT EXISTS OrleansMembershipVersionTable
(
    DeploymentId varchar(150) NOT NULL PRIMARY KEY,
    Timestamp    timestamptz  NOT NULL DEFAULT now(),
    Version      integer      NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS OrleansMembershipTable
(
    DeploymentId varchar(150) NOT NULL REFERENCES OrleansMembershipVersionTable (DeploymentId),
    Address      varchar(45)  NOT NULL,
    Port         integer      NOT NULL,
    Generation   integer      NOT NULL,
    SiloName     varchar(150) NOT NULL,
    HostName     varchar(150) NOT NULL,
    Status       integer      NOT NULL,
    ProxyPort    integer      NULL,
    SuspectTimes text         NULL,
    StartTime    timestamptz  NOT NULL,
    IAmAliveTime timestamptz  NOT NULL,
    PRIMARY KEY (DeploymentId, Address, Port, Generation)
);

-- A silo joins: its row is added and the version bumped, both or neither.
CREATE OR REPLACE FUNCTION mixtral_membership_insert(
    deployment text, silo_address text, silo_port integer, silo_generation integer, silo_name text, host_name text,
    silo_status integer, proxy_port integer, started timestamptz, alive timestamptz, expected_version integer)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    UPDATE OrleansMembershipVersionTable SET Version = Version + 1, Timestamp = now()
    WHERE DeploymentId = deployment AND Version = expected_version;
    IF NOT FOUND THEN RETURN 0; END IF;
    INSERT INTO OrleansMembershipTable (DeploymentId, Address, Port, Generation, SiloName, HostName, Status, ProxyPort, StartTime, IAmAliveTime)
    VALUES (deployment, silo_address, silo_port, silo_generation, silo_name, host_name, silo_status, proxy_port, started, alive);
    RETURN 1;
EXCEPTION WHEN unique_violation THEN
    RETURN 0; -- the block's version bump is rolled back with it
END $$;

-- A silo's status or suspicions change: the row is updated and the version bumped, both or neither.
CREATE OR REPLACE FUNCTION mixtral_membership_update(
    deployment text, silo_address text, silo_port integer, silo_generation integer,
    silo_status integer, suspect_times text, alive timestamptz, expected_version integer)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    UPDATE OrleansMembershipVersionTable SET Version = Version + 1, Timestamp = now()
    WHERE DeploymentId = deployment AND Version = expected_version;
    IF NOT FOUND THEN RETURN 0; END IF;
    UPDATE OrleansMembershipTable SET Status = silo_status, SuspectTimes = suspect_times, IAmAliveTime = alive
    WHERE DeploymentId = deployment AND Address = silo_address AND Port = silo_port AND Generation = silo_generation;
    IF NOT FOUND THEN RAISE EXCEPTION 'no such silo' USING ERRCODE = 'no_data_found'; END IF;
    RETURN 1;
EXCEPTION WHEN no_data_found THEN
    RETURN 0;
END $$;

INSERT INTO OrleansQuery (QueryKey, QueryText) VALUES
('InsertMembershipVersionKey', '
    WITH added AS (
        INSERT INTO OrleansMembershipVersionTable (DeploymentId) VALUES (@DeploymentId)
        ON CONFLICT (DeploymentId) DO NOTHING RETURNING 1)
    SELECT count(*)::integer FROM added'),
('InsertMembershipKey', '
    SELECT mixtral_membership_insert(@DeploymentId, @Address, @Port, @Generation, @SiloName, @HostName, @Status,
        @ProxyPort, @StartTime::timestamptz, @IAmAliveTime::timestamptz, @Version)'),
('UpdateMembershipKey', '
    SELECT mixtral_membership_update(@DeploymentId, @Address, @Port, @Generation, @Status, @SuspectTimes::text,
        @IAmAliveTime::timestamptz, @Version)'),
('UpdateIAmAlivetimeKey', '
    UPDATE OrleansMembershipTable SET IAmAliveTime = @IAmAliveTime::timestamptz
    WHERE DeploymentId = @DeploymentId AND Address = @Address AND Port = @Port AND Generation = @Generation'),
('MembershipReadRowKey', '
    SELECT v.Version, m.Address, m.Port, m.Generation, m.SiloName, m.HostName, m.Status, m.ProxyPort, m.SuspectTimes,
        m.StartTime, m.IAmAliveTime
    FROM OrleansMembershipVersionTable v
    LEFT JOIN OrleansMembershipTable m ON m.DeploymentId = v.DeploymentId
        AND m.Address = @Address AND m.Port = @Port AND m.Generation = @Generation
    WHERE v.DeploymentId = @DeploymentId'),
('MembershipReadAllKey', '
    SELECT v.Version, m.Address, m.Port, m.Generation, m.SiloName, m.HostName, m.Status, m.ProxyPort, m.SuspectTimes,
        m.StartTime, m.IAmAliveTime
    FROM OrleansMembershipVersionTable v
    LEFT JOIN OrleansMembershipTable m ON m.DeploymentId = v.DeploymentId
    WHERE v.DeploymentId = @DeploymentId'),
('GatewaysQueryKey', '
    SELECT Address, ProxyPort, Generation FROM OrleansMembershipTable
    WHERE DeploymentId = @DeploymentId AND Status = @Status AND ProxyPort > 0'),
('DeleteMembershipTableEntriesKey', '
    DELETE FROM OrleansMembershipTable WHERE DeploymentId = @DeploymentId;
    DELETE FROM OrleansMembershipVersionTable WHERE DeploymentId = @DeploymentId'),
('CleanupDefunctSiloEntriesKey', '
    DELETE FROM OrleansMembershipTable
    WHERE DeploymentId = @DeploymentId AND Status = 6 AND IAmAliveTime < @IAmAliveTime::timestamptz'),
('CleanupDefunctSiloEntryKey', '
    DELETE FROM OrleansMembershipTable
    WHERE DeploymentId = @DeploymentId AND Address = @Address AND Port = @Port AND Generation = @Generation AND Status = 6')
ON CONFLICT (QueryKey) DO UPDATE SET QueryText = EXCLUDED.QueryText;
