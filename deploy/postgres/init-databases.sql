-- One database per service (docker-compose only: the postgres image runs this once, on an
-- empty data directory, as POSTGRES_USER, who then owns all four).
CREATE DATABASE orders;
CREATE DATABASE inventory;
CREATE DATABASE email;
CREATE DATABASE analytics;
