-- Plant schema v4: what the plant holds of a station's history, for the station's replicator to check on connect.

-- Per history table, the last row the plant holds of station number `station_no` (its id at the station) and what
-- identifies that row: the audit record's hash, the inspection's uid, else the id of its audit record at the
-- station; 'pictures': the last inspection with a copied picture. The replicator compares these with its own log
-- before it ships anything (app.store.replicator): it resends what a database restored from a backup lacks, and
-- refuses to add a different log's rows to this station's history. SECURITY DEFINER: a station's login may not
-- read the history tables; this reads only the last rows of a station that login claimed.
CREATE FUNCTION plant_station_heads(station_no integer) RETURNS TABLE (kind text, local_id bigint, mark text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    lo bigint := station_no::bigint * 10000000000;
    hi bigint := (station_no::bigint + 1) * 10000000000;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM stations s WHERE s.no = station_no AND s.kind = 'station' AND s.login = session_user) THEN
        RAISE EXCEPTION 'station number % is not one this login claimed', station_no
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY
        (SELECT 'audit', a.local_id, coalesce(a.hash, '') FROM audit a
         WHERE a.id >= lo AND a.id < hi ORDER BY a.id DESC LIMIT 1)
        UNION ALL
        (SELECT 'inspections', i.local_id, i.uid FROM inspections i
         WHERE i.id >= lo AND i.id < hi ORDER BY i.id DESC LIMIT 1)
        UNION ALL
        (SELECT 'reviews', r.local_id, r.audit_id::text FROM reviews r
         WHERE r.id >= lo AND r.id < hi ORDER BY r.id DESC LIMIT 1)
        UNION ALL
        (SELECT 'review_boxes', b.local_id, b.audit_id::text FROM review_boxes b
         WHERE b.id >= lo AND b.id < hi ORDER BY b.id DESC LIMIT 1)
        UNION ALL
        (SELECT 'recipes', c.local_id, c.audit_id::text FROM recipes c
         WHERE c.id >= lo AND c.id < hi ORDER BY c.id DESC LIMIT 1)
        UNION ALL
        (SELECT 'pictures', p.inspection_id - lo, '' FROM pictures p
         WHERE p.inspection_id >= lo AND p.inspection_id < hi ORDER BY p.inspection_id DESC LIMIT 1);
END $$;
REVOKE ALL ON FUNCTION plant_station_heads(integer) FROM PUBLIC;
