-- Plant schema v3: reports and the gallery's filter choices without reading every inspection row.

-- The report-day counts read a month's created_at, id, station and verdict from this index alone (an inspection
-- row is ~600 bytes; its entry here ~50): ordered by (created_at, id) as before, for the gallery's newest first.
DROP INDEX ix_inspections_created;
CREATE INDEX ix_inspections_created ON inspections (created_at, id) INCLUDE (station, verdict);

-- The classes and operators seen (in a range), read by skip scans: one index probe per distinct value.
DROP INDEX ix_detections_label;
CREATE INDEX ix_detections_label ON detections (label, created_at);
CREATE INDEX ix_inspections_operator ON inspections (operator, created_at);
