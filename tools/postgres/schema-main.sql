-- OrleansMixtral on PostgreSQL, 1 of 3: the table of queries Orleans' ADO.NET providers run.
-- Orleans (Microsoft.Orleans.Clustering.AdoNet / Persistence.AdoNet, invariant "Npgsql") reads every query it runs from
-- this table at start-up ("SELECT QueryKey, QueryText FROM OrleansQuery") and binds its parameters by name (@Name).
-- The project's own scripts: the packages ship none. Idempotent: apply them again after an upgrade
-- (tools/postgres/apply-schema.sh). Unquoted names: PostgreSQL folds them to lower case, and Npgsql finds the columns
-- Orleans asks for ("QueryKey") whatever their case.

CREATE TABLE IF NOT EXISTS OrleansQuery
(
    QueryKey  varchar(64) NOT NULL PRIMARY KEY,
    QueryText text        NOT NULL
);
