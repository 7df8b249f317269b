-- 0002_jambonz_mirror: mark the rows that serve --jambonz-database-url
-- mirrors from jambonz's MySQL. The mirror inserts, updates and deletes only
-- rows marked here, so presencehub's own rows (such as the admin keys of
-- `presencehub apikey create --admin`) are never touched by a sync, and the
-- API refuses management writes to marked rows.
ALTER TABLE service_providers ADD COLUMN mirrored boolean NOT NULL DEFAULT false;
ALTER TABLE accounts ADD COLUMN mirrored boolean NOT NULL DEFAULT false;
ALTER TABLE api_keys ADD COLUMN mirrored boolean NOT NULL DEFAULT false;
ALTER TABLE clients ADD COLUMN mirrored boolean NOT NULL DEFAULT false;
