"""IO for market and weather data: database engine, ORM schema, migrations, clients, ingest."""
