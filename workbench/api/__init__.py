"""The served HTTP surface: dashboards, health and metrics, behind one login."""
