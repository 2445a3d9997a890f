"""The labeled datasets: a manifest of pinned sources and `bioinstruct data fetch`, which lays
them out in the data folder (BIOINSTRUCT_DATA_DIR), each file verified by its SHA-256."""
