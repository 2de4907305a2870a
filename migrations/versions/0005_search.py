"""Semantic search: documents, chunks with embeddings (pgvector HNSW) and full-text.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    # One row per indexed thing: a catalog entity (entity_id set) or a free document.
    # A deleted entity keeps its row (is_deleted, version) so late updates cannot revive it.
    op.execute(
        """
        CREATE TABLE dictamesh_search_documents (
            id uuid PRIMARY KEY,
            entity_id uuid,
            kind text NOT NULL CHECK (kind IN ('entity', 'document')),
            domain text,
            source_system text,
            entity_type text,
            source_id text,
            title text,
            url text,
            tags text[] NOT NULL DEFAULT '{}',
            metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
            content text NOT NULL DEFAULT '',
            content_hash bytea,
            model text,
            version bigint NOT NULL DEFAULT 0,
            is_deleted boolean NOT NULL DEFAULT false,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            indexed_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "CREATE INDEX idx_dictamesh_search_documents_entity "
        "ON dictamesh_search_documents (entity_id)"
    )
    # Chunks carry copies of the filter fields so a filtered search reads one table.
    op.execute(
        """
        CREATE TABLE dictamesh_search_chunks (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            document_id uuid NOT NULL
                REFERENCES dictamesh_search_documents (id) ON DELETE CASCADE,
            ordinal integer NOT NULL,
            char_start integer NOT NULL,
            char_end integer NOT NULL,
            heading text NOT NULL DEFAULT '',
            content text NOT NULL,
            token_count integer NOT NULL,
            embedding vector(384) NOT NULL,
            domain text,
            source_system text,
            entity_type text,
            tags text[] NOT NULL DEFAULT '{}',
            updated_at timestamptz NOT NULL DEFAULT now(),
            search_tsv tsvector GENERATED ALWAYS AS (
                setweight(to_tsvector('english'::regconfig, heading), 'A')
                || setweight(to_tsvector('english'::regconfig, content), 'B')
            ) STORED,
            UNIQUE (document_id, ordinal)
        )
        """
    )
    op.execute(
        "CREATE INDEX idx_dictamesh_search_chunks_embedding ON dictamesh_search_chunks "
        "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
    )
    op.execute(
        "CREATE INDEX idx_dictamesh_search_chunks_tsv ON dictamesh_search_chunks "
        "USING gin (search_tsv)"
    )
    op.execute(
        "CREATE INDEX idx_dictamesh_search_chunks_filters ON dictamesh_search_chunks "
        "(domain, source_system, entity_type)"
    )
    op.execute(
        "CREATE INDEX idx_dictamesh_search_chunks_tags ON dictamesh_search_chunks USING gin (tags)"
    )
    op.execute(
        "CREATE INDEX idx_dictamesh_search_chunks_updated ON dictamesh_search_chunks (updated_at)"
    )
    # Unchanged text is never embedded twice: sha256(model, text) -> vector, any dimension.
    op.execute(
        """
        CREATE TABLE dictamesh_search_embedding_cache (
            model text NOT NULL,
            content_hash bytea NOT NULL,
            embedding vector NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (model, content_hash)
        )
        """
    )
    # Backfill progress: `dictamesh search reindex` resumes after the last committed entity.
    op.execute(
        """
        CREATE TABLE dictamesh_search_reindex (
            job text PRIMARY KEY,
            cursor_id uuid,
            done bigint NOT NULL DEFAULT 0,
            total bigint NOT NULL DEFAULT 0,
            model text NOT NULL,
            started_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS dictamesh_search_reindex")
    op.execute("DROP TABLE IF EXISTS dictamesh_search_embedding_cache")
    op.execute("DROP TABLE IF EXISTS dictamesh_search_chunks")
    op.execute("DROP TABLE IF EXISTS dictamesh_search_documents")
