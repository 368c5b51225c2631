"""Routers of the BK-CI API app, one per resource."""
