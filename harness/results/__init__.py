"""Result rows (one JSON file per run) and what is built from them: status, tables, plots."""
