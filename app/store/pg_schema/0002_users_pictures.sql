-- Plant schema v2: the stations' users as they change, and the pictures copied to the plant picture store.

-- A station's users: a new row whenever a user is added or their role or state changes (append-only:
-- the latest row per station and user is current). PIN hashes stay on the station.
CREATE TABLE user_versions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    station text NOT NULL,
    local_id bigint NOT NULL,                -- the user's id at the station
    name text NOT NULL,
    role text NOT NULL,
    active boolean NOT NULL,
    created_at timestamptz NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_user_versions_station ON user_versions (station, local_id, id DESC);
CREATE TRIGGER user_versions_append_only BEFORE UPDATE OR DELETE ON user_versions
    FOR EACH ROW EXECUTE FUNCTION plant_append_only();
CREATE TRIGGER user_versions_no_truncate BEFORE TRUNCATE ON user_versions
    FOR EACH STATEMENT EXECUTE FUNCTION plant_append_only();

-- Pictures in the plant picture store (a folder, e.g. a mounted share), each copied atomically and
-- checked against the SHA-256 the station logged before this row is written.
CREATE TABLE pictures (
    inspection_id bigint NOT NULL,           -- plant-wide
    kind text NOT NULL CHECK (kind IN ('image', 'annotated')),
    path text NOT NULL,                      -- relative to the picture store
    sha256 text NOT NULL,
    bytes bigint NOT NULL,
    copied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (inspection_id, kind)
);
CREATE TRIGGER pictures_append_only BEFORE UPDATE OR DELETE ON pictures
    FOR EACH ROW EXECUTE FUNCTION plant_append_only();
CREATE TRIGGER pictures_no_truncate BEFORE TRUNCATE ON pictures
    FOR EACH STATEMENT EXECUTE FUNCTION plant_append_only();
