-- Plant schema v3: the gallery's operator filter and its list of operators without reading every inspection.
-- (The list is read with a skip scan over this index: one probe per distinct operator, not one row per inspection.)
CREATE INDEX ix_inspections_operator ON inspections (operator, created_at);
