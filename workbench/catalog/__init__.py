"""The catalog: entities, relationships, schemas, lineage and the event log, kept by a projector."""
