-- The plant database's three roles and what each may do (least privilege).
--
--   plant_station  a station's replicator: inserts its own station's rows, nothing else. No UPDATE,
--                  DELETE or TRUNCATE anywhere; it reads only the station register and its own users.
--   plant_qa       QA in plant mode: reads everything; inserts QA reviews, box corrections and audit
--                  records of the plant's own chain (origin 'plant'), only in its own name.
--   plant_report   supervisors and reporting tools: read only.
--
-- The roles cannot log in. Each PC gets its own login, a member of one role, e.g.
--     CREATE ROLE line3 LOGIN PASSWORD '...' IN ROLE plant_station;   -- one login per station
--     CREATE ROLE alice LOGIN PASSWORD '...' IN ROLE plant_qa;        -- QA's name in the audit trail
--     CREATE ROLE reports LOGIN PASSWORD '...' IN ROLE plant_report;
-- A station's login claims its station name on first connect (stations.login); rows of a station
-- are accepted only from the login that claimed it. A QA login's name is the reviewer the plant
-- records: the database refuses a review or audit record in anyone else's name.
-- History tables are append-only for every role, the owner too (triggers of the schema).
--
-- Applied by the schema migration (app.store.postgres.migrate) after every migration, so that new
-- tables get their privileges; safe to run again. Creating the roles needs CREATEROLE: where the
-- migrating login lacks it, a superuser runs this file once first (psql -f resources/sql/roles.sql).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plant_station') THEN CREATE ROLE plant_station NOLOGIN; END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plant_qa') THEN CREATE ROLE plant_qa NOLOGIN; END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plant_report') THEN CREATE ROLE plant_report NOLOGIN; END IF;
END $$;

-- Nothing but what is granted below (also on a server older than 15, where PUBLIC may create in public).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO plant_station, plant_qa, plant_report;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM plant_station, plant_qa, plant_report;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM plant_station, plant_qa, plant_report;

-- Everyone reads the schema version and the station register.
GRANT SELECT ON schema_version, stations TO plant_station, plant_qa, plant_report;

-- The station: inserts its rows; reads back only its own users (to add a user version only when it changed).
GRANT INSERT ON inspections, detections, inspection_regions, audit, reviews, review_boxes, recipes, user_versions,
    pictures TO plant_station;
GRANT INSERT (name) ON stations TO plant_station;
GRANT SELECT ON user_versions TO plant_station;
GRANT USAGE ON SEQUENCE arrival TO plant_station, plant_qa;
GRANT EXECUTE ON FUNCTION plant_ensure_month(timestamptz) TO plant_station;
GRANT EXECUTE ON FUNCTION plant_station_heads(integer) TO plant_station;  -- its own rows' last ids, to check its log

-- QA: reads everything; inserts its reviews and the plant chain's audit records.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO plant_qa, plant_report;
GRANT INSERT ON audit, reviews, review_boxes TO plant_qa;

-- Row-level security: which rows each role may insert (and the station, read).
ALTER TABLE stations ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS read_all ON stations;
CREATE POLICY read_all ON stations FOR SELECT USING (true);
DROP POLICY IF EXISTS station_claims ON stations;
CREATE POLICY station_claims ON stations FOR INSERT TO plant_station WITH CHECK (kind = 'station' AND login = current_user);

DO $$
DECLARE
    t text;
BEGIN
    -- Rows with their origin's name: a station's login writes rows of the stations it claimed, QA the plant's.
    FOREACH t IN ARRAY ARRAY['audit', 'reviews', 'review_boxes', 'recipes', 'user_versions'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS read_all ON %I', t);
        EXECUTE format('CREATE POLICY read_all ON %I FOR SELECT TO plant_qa, plant_report USING (true)', t);
        EXECUTE format('DROP POLICY IF EXISTS station_inserts_own ON %I', t);
        EXECUTE format('CREATE POLICY station_inserts_own ON %I FOR INSERT TO plant_station WITH CHECK ('
                       'station IN (SELECT s.name FROM stations s WHERE s.no = ANY (plant_my_stations()))'
                       '%s)', t, CASE WHEN t = 'user_versions' THEN '' ELSE
                       ' AND id / 10000000000 = ANY (plant_my_stations())' END);
    END LOOP;
    -- Inspections (whose station column is the name they were logged with, which a renamed station changes)
    -- and the rows keyed by their inspection's plant-wide id: the station number is part of the id.
    EXECUTE 'ALTER TABLE inspections ENABLE ROW LEVEL SECURITY';
    DROP POLICY IF EXISTS read_all ON inspections;
    CREATE POLICY read_all ON inspections FOR SELECT TO plant_qa, plant_report USING (true);
    DROP POLICY IF EXISTS station_inserts_own ON inspections;
    CREATE POLICY station_inserts_own ON inspections FOR INSERT TO plant_station
        WITH CHECK (id / 10000000000 = ANY (plant_my_stations()));
    FOREACH t IN ARRAY ARRAY['detections', 'inspection_regions', 'pictures'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS read_all ON %I', t);
        EXECUTE format('CREATE POLICY read_all ON %I FOR SELECT TO plant_qa, plant_report USING (true)', t);
        EXECUTE format('DROP POLICY IF EXISTS station_inserts_own ON %I', t);
        EXECUTE format('CREATE POLICY station_inserts_own ON %I FOR INSERT TO plant_station'
                       ' WITH CHECK (inspection_id / 10000000000 = ANY (plant_my_stations()))', t);
    END LOOP;
END $$;

DROP POLICY IF EXISTS station_reads_own ON user_versions;
CREATE POLICY station_reads_own ON user_versions FOR SELECT TO plant_station
    USING (station IN (SELECT s.name FROM stations s WHERE s.no = ANY (plant_my_stations())));

-- QA writes only the plant's own chain (origin 0), and only in the name it logged in with.
DROP POLICY IF EXISTS qa_inserts_plant ON audit;
CREATE POLICY qa_inserts_plant ON audit FOR INSERT TO plant_qa
    WITH CHECK (station = 'plant' AND id < 10000000000 AND user_name = session_user);
DROP POLICY IF EXISTS qa_inserts_plant ON reviews;
CREATE POLICY qa_inserts_plant ON reviews FOR INSERT TO plant_qa
    WITH CHECK (station = 'plant' AND id < 10000000000 AND reviewer = session_user);
DROP POLICY IF EXISTS qa_inserts_plant ON review_boxes;
CREATE POLICY qa_inserts_plant ON review_boxes FOR INSERT TO plant_qa
    WITH CHECK (station = 'plant' AND id < 10000000000);
