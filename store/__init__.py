"""What both planes share: database engine and sessions, SQLAlchemy models, Alembic migrations,
secret hashing and key formats, time and quota periods."""
