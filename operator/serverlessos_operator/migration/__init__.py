"""Live migration, the operator's part: the rules and the ProcessMigration controller."""
